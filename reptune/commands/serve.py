"""``reptune serve``: an OpenAI-compatible chat server, steered per request.

Example:
    $ reptune serve --model embedded:smollm2-135m --vectors runs/sentiment/vectors --port 8000
    $ curl http://127.0.0.1:8000/v1/chat/completions -d '{"messages": [{"role": "user",
        "content": "Describe a park."}], "max_tokens": 40,
        "reptune": {"layers": [10], "coefficient": 0.15}}'
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..workflow.args import TunedModelArguments
from . import allow_vector_mismatch_field, parse

__all__ = ["HELP", "ServeArguments", "main"]

HELP = "serve a base, steered or tuned model over an OpenAI-compatible chat API"

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(kw_only=True)
class ServeArguments(TunedModelArguments):
    """Options of ``reptune serve``."""

    vectors: str | None = field(
        default=None,
        metadata={"help": "folder written by `reptune extract`: lets requests steer"},
    )
    device: str | None = field(default=None, metadata={"help": "e.g. cuda:0 (default: CPU)"})
    host: str = field(
        default="127.0.0.1", metadata={"help": "address to listen on (loopback by default)"}
    )
    port: int = field(default=8000, metadata={"help": "port to listen on (0: any free port)"})
    served_model_name: str | None = field(
        default=None, metadata={"help": "name requests must give as `model` (default: --model)"}
    )
    default_max_tokens: int = field(
        default=256, metadata={"help": "max_tokens of requests that name none"}
    )
    max_tokens_limit: int = field(default=2048, metadata={"help": "largest max_tokens accepted"})
    allow_vector_mismatch: bool = allow_vector_mismatch_field()


def check_arguments(args: ServeArguments) -> None:
    """Raise for bad options and missing files, before any model is loaded."""
    from ..vectors import METADATA_FILE, VECTORS_FILE
    from .loading import is_adapter_folder

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be between 0 and 65535, got {args.port}")
    if not 1 <= args.default_max_tokens <= args.max_tokens_limit:
        raise ValueError(
            f"need 1 <= --default_max_tokens ({args.default_max_tokens}) <= --max_tokens_limit "
            f"({args.max_tokens_limit})"
        )
    if args.vectors is not None:
        folder = Path(args.vectors)
        missing = [n for n in (VECTORS_FILE, METADATA_FILE) if not (folder / n).is_file()]
        if missing:
            raise FileNotFoundError(
                f"--vectors {folder} lacks {', '.join(missing)}: pass a folder written by "
                "`reptune extract`"
            )
    if args.adapter is not None and not is_adapter_folder(args.adapter):
        raise FileNotFoundError(
            f"--adapter {args.adapter} is not a PEFT adapter folder (no adapter_config.json)"
        )


def main(argv) -> int:
    (args,) = parse((ServeArguments,), argv, "reptune serve")
    check_arguments(args)
    from ..serve import ChatServer, serve_forever
    from ..vectors import SteeringVectors
    from .loading import load_for_evaluation

    model, tok = load_for_evaluation(args.model, args.adapter, args.dtype, args.trust_remote_code)
    if args.device is not None:
        model.to(args.device)
    vectors = (
        SteeringVectors.load(args.vectors, model=model, allow_mismatch=args.allow_vector_mismatch)
        if args.vectors
        else None
    )
    server = ChatServer(
        model,
        tok,
        vectors,
        model_name=args.served_model_name or args.model,
        default_max_tokens=args.default_max_tokens,
        max_tokens_limit=args.max_tokens_limit,
        allow_mismatch=args.allow_vector_mismatch,
    )
    if args.host not in _LOOPBACK:
        print(
            f"reptune serve: warning: listening on {args.host} without authentication; anyone "
            "who can reach it can use the model",
            file=sys.stderr,
        )
    layers = vectors.layers if vectors is not None else "none"
    print(f"reptune serve: model {server.model_name!r}, steering layers {layers}", flush=True)
    serve_forever(server.app(), args.host, args.port)
    return 0
