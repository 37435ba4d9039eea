"""ChatServer: the OpenAI-compatible chat-completions app (see :mod:`reptune.serve`)."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from aiohttp import web

from ..steering import SteeredModel
from ..tokenization import context_length, encode_batch
from ..vectors import COEFFICIENT_UNITS, SteeringVectors
from .checks import RequestError, check_integer, check_message, check_number, check_steering

__all__ = ["ChatServer"]

logger = logging.getLogger(__name__)

_ROUTES = "POST /v1/chat/completions, GET /v1/models and GET /health"


@dataclass
class _Job:
    batch: dict
    steered: SteeredModel | None
    steering: dict | None
    generate_kwargs: dict
    stop: list[str]
    seed: int | None = None


class ChatServer:
    """Holds the model, tokenizer and optional vectors; :meth:`app` builds the aiohttp app.

    ``max_tokens_limit`` caps ``max_tokens``; ``default_max_tokens`` is used when a request
    names none; at most ``max_pending`` requests wait for the worker (more get 503).

    Example:
        >>> app = ChatServer(model, tok, SteeringVectors.load("runs/v", model=model)).app()
    """

    def __init__(
        self,
        model,
        tokenizer,
        vectors: SteeringVectors | None = None,
        *,
        model_name: str = "reptune",
        default_max_tokens: int = 256,
        max_tokens_limit: int = 2048,
        max_pending: int = 64,
        allow_mismatch: bool = False,
    ):
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "the tokenizer has no chat template, so chat messages cannot be turned into a "
                "prompt: serve a chat model or set tokenizer.chat_template"
            )
        if vectors is not None:
            vectors.check_compatible(model, allow_mismatch=allow_mismatch)
        self.model, self.tokenizer, self.vectors = model, tokenizer, vectors
        self.model_name = model_name
        self.default_max_tokens = default_max_tokens
        self.max_tokens_limit = max_tokens_limit
        self.max_pending = max_pending
        self.context = context_length(model)
        self.created = int(time.time())
        self._lock = threading.Lock()
        self._pending = 0
        self._executor: ThreadPoolExecutor | None = None

    # -- request checking (event loop thread; cheap, no forward pass) --------------------------

    def parse(self, body) -> _Job:
        """Check a decoded request body; raise :class:`RequestError` for anything wrong.

        Whatever the body holds, the answer is a :class:`RequestError` (a 4xx), never another
        exception: a body that trips a check's own assumptions is still the body's problem.
        """
        try:
            return self._parse(body)
        except RequestError:
            raise
        except Exception as err:  # e.g. OverflowError, RecursionError on a pathological value
            logger.warning("request refused by an unexpected error", exc_info=True)
            raise RequestError(
                f"the request body could not be checked ({type(err).__name__}: {str(err)[:200]})"
            ) from None

    def _parse(self, body) -> _Job:
        if not isinstance(body, dict):
            raise RequestError("the request body must be a JSON object")
        name = body.get("model")
        if name is not None and not isinstance(name, str):
            raise RequestError(f"model must be a string, got {type(name).__name__}", "model")
        if name is not None and name != self.model_name:
            raise RequestError(
                f"the model {name!r} is not served here; this server serves {self.model_name!r}",
                "model",
                "model_not_found",
                status=404,
            )
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise RequestError(
                f"stream must be true or false, got {type(stream).__name__}", "stream"
            )
        if stream:
            raise RequestError("streaming is not supported: send stream=false", "stream")
        n = body.get("n", 1)
        if n is not None and (isinstance(n, bool) or n != 1):
            raise RequestError("only n=1 is supported", "n")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError("messages must be a non-empty list of {role, content}", "messages")
        chat = [check_message(m, i) for i, m in enumerate(messages)]
        key = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
        max_tokens = body.get(key)
        if max_tokens is not None:
            check_integer(max_tokens, key, 1, self.max_tokens_limit)
        temperature = check_number(body, "temperature", 0.0, 0.0, 2.0)
        top_p = check_number(body, "top_p", 1.0, 1e-6, 1.0)
        seed = body.get("seed")
        if seed is not None:
            check_integer(seed, "seed", 0, 2**63 - 1)
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else stop
        if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
            raise RequestError("stop must be a string or a list of non-empty strings", "stop")
        steered, steering = check_steering(body.get("reptune"), self.model, self.vectors)
        try:
            text = self.tokenizer.apply_chat_template(
                chat, tokenize=False, add_generation_prompt=True
            )
        except Exception as err:  # jinja raises its own errors (e.g. roles must alternate)
            raise RequestError(
                f"the chat template refused these messages: {err}", "messages"
            ) from None
        try:
            batch = encode_batch(self.tokenizer, [text])
        except ValueError as err:
            raise RequestError(str(err), "messages") from None
        n_prompt = batch["input_ids"].shape[1]
        if max_tokens is None:  # as much as fits, up to the default (as vLLM does)
            room = self.context - n_prompt if self.context is not None else math.inf
            max_tokens = max(1, min(self.default_max_tokens, room))
        if self.context is not None and n_prompt + max_tokens > self.context:
            raise RequestError(
                f"the prompt has {n_prompt} tokens and max_tokens is {max_tokens}: together more "
                f"than the model's context of {self.context} tokens; shorten the messages or "
                "lower max_tokens",
                "messages",
                "context_length_exceeded",
            )
        kwargs = {"max_new_tokens": max_tokens, "do_sample": temperature > 0}
        if temperature > 0:
            kwargs.update(temperature=temperature, top_p=top_p)
        if stop:
            kwargs.update(stop_strings=stop, tokenizer=self.tokenizer)
        return _Job(batch, steered, steering, kwargs, stop, seed)

    # -- generation (worker thread) ------------------------------------------------------------

    def generate(self, job: _Job) -> dict:
        """Run one checked request and build the OpenAI response (one at a time)."""
        kwargs = job.generate_kwargs
        device = next(self.model.parameters()).device
        batch = {k: v.to(device) for k, v in job.batch.items()}
        with self._lock:
            if job.seed is not None:
                torch.manual_seed(job.seed)
            runner = job.steered if job.steered is not None else self.model
            out = runner.generate(**batch, **kwargs)
        n_prompt = batch["input_ids"].shape[1]
        ids = out[0, n_prompt:].tolist()
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        eos = self.model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        finish = "stop" if (eos & set(ids)) or len(ids) < kwargs["max_new_tokens"] else "length"
        cut = [text.find(s) for s in job.stop if s in text]
        if cut:
            text, finish = text[: min(cut)], "stop"
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish,
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": n_prompt,
                "completion_tokens": len(ids),
                "total_tokens": n_prompt + len(ids),
            },
            "reptune": {"steering": job.steering, "completion_token_ids": ids},
        }

    # -- HTTP ----------------------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.text())
        except ValueError as err:  # JSONDecodeError, bytes that are not UTF-8, too many digits
            raise RequestError(f"the request body is not valid JSON: {str(err)[:200]}") from None
        except RecursionError:
            raise RequestError("the request body is nested too deeply to read") from None
        job = self.parse(body)
        if self._pending >= self.max_pending:
            raise RequestError(
                f"{self._pending} requests are already waiting; retry later",
                code="busy",
                status=503,
            )
        self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self._executor, self.generate, job)
        except RuntimeError as err:  # sampling from the non-finite logits a steering made
            if job.steered is None:
                raise
            raise RequestError(
                f"generation failed under the requested steering ({str(err)[:200]}): lower "
                "reptune.coefficient",
                "coefficient",
                status=422,
            ) from None
        finally:
            self._pending -= 1
        return web.json_response(result)

    async def _models(self, request: web.Request) -> web.Response:
        info = {
            "steering_layers": self.vectors.layers if self.vectors is not None else [],
            "coefficient_units": list(COEFFICIENT_UNITS),
            "context_length": self.context,
        }
        model = {"id": self.model_name, "object": "model", "created": self.created}
        return web.json_response(
            {"object": "list", "data": [{**model, "owned_by": "reptune", "reptune": info}]}
        )

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "pending": self._pending})

    async def _start(self, app) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="reptune-generate")

    async def _stop(self, app) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def app(self, client_max_size: int = 1024**2) -> web.Application:
        """The aiohttp application (request bodies up to ``client_max_size`` bytes)."""
        app = web.Application(middlewares=[_error_middleware], client_max_size=client_max_size)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app


def _error(status: int, message: str, param=None, code=None) -> web.Response:
    kind = "invalid_request_error" if status < 500 else "server_error"
    error = {"message": message, "type": kind, "param": param, "code": code}
    return web.json_response({"error": error}, status=status)


@web.middleware
async def _error_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except RequestError as err:
        return _error(err.status, str(err), err.param, err.code)
    except web.HTTPException as err:  # unknown route, wrong method, body too large
        if err.status < 400:
            raise
        message = err.reason
        if err.text and not err.text.startswith(f"{err.status}:"):
            message = err.text  # e.g. "Maximum request body size 1048576 exceeded, ..."
        if err.status in (404, 405):
            message = f"{message}: {request.method} {request.path}; this server answers {_ROUTES}"
        return _error(err.status, message)
    except Exception as err:
        logger.exception("request failed")
        return _error(500, f"generation failed: {type(err).__name__}: {err}")
