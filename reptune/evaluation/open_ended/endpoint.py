"""A minimal client for any OpenAI-compatible chat-completions endpoint.

Works with hosted APIs, vLLM, llama.cpp's ``llama-server`` and ``reptune serve``. The API key is
read from an environment variable (its *name* is configurable) at the moment of each request: it
is never stored on the object, written to disk, logged or put into an exception message.

Example:
    >>> judge = ChatEndpoint("http://127.0.0.1:8000/v1", model="embedded:smollm2-135m")
    >>> judge.complete([{"role": "user", "content": "Say hi"}], max_tokens=8)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

__all__ = ["ChatEndpoint", "EndpointError", "DEFAULT_API_KEY_ENV"]

DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
# Transient answers worth another try; any other status is final.
_RETRY_STATUSES = (429, 500, 502, 503, 504)
# Status codes that concern one request's content (too long, malformed): the caller may skip
# that request and go on, while e.g. 401/404 concern every request.
REQUEST_STATUSES = (400, 413, 422)


class EndpointError(RuntimeError):
    """The endpoint could not be reached or answered with an error (``status`` if it answered)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def display_url(url: str) -> str:
    """``url`` without user:password and query (safe to print or save).

    Example:
        >>> display_url("https://user:pw@host/v1?key=x")
        'https://host/v1'
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass(frozen=True)
class ChatEndpoint:
    """Where and how to send chat requests.

    ``base_url`` ends before ``/chat/completions`` (e.g. ``http://127.0.0.1:8000/v1``);
    ``api_key_env`` names the environment variable holding the key (no key is sent when it is
    unset, as local servers need none); ``extra_body`` is merged into every request body.
    Each request waits at most ``timeout`` seconds and is retried at most ``max_retries`` times
    on connection errors and on 429/5xx answers, with a bounded back-off.

    Example:
        >>> judge = ChatEndpoint("https://api.openai.com/v1", model="gpt-4o-mini")
        >>> judge.complete([{"role": "user", "content": "A or B?"}], max_tokens=4)
    """

    base_url: str
    model: str
    api_key_env: str = DEFAULT_API_KEY_ENV
    timeout: float = 60.0
    max_retries: int = 2
    extra_body: Mapping[str, Any] | None = None
    _session: requests.Session = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        scheme = urlsplit(self.base_url).scheme
        if scheme not in ("http", "https"):
            raise ValueError(
                f"base_url must start with http:// or https://, got {display_url(self.base_url)!r}"
            )
        if not self.model:
            raise ValueError("model must name the endpoint's model (see GET <base_url>/models)")
        if self.timeout <= 0 or self.max_retries < 0:
            raise ValueError("timeout must be > 0 and max_retries >= 0")
        retry = Retry(
            total=self.max_retries,
            backoff_factor=0.5,
            backoff_max=8.0,
            status_forcelist=_RETRY_STATUSES,
            allowed_methods=None,  # POST too: a chat completion has no side effects
            respect_retry_after_header=False,  # a server's Retry-After could be unbounded
            raise_on_status=False,
        )
        session = requests.Session()
        session.mount("http://", HTTPAdapter(max_retries=retry))
        session.mount("https://", HTTPAdapter(max_retries=retry))
        object.__setattr__(self, "_session", session)

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    def complete(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        max_tokens: int = 16,
        temperature: float = 0.0,
        **body: Any,
    ) -> str:
        """The content of the first choice for ``messages`` (``""`` when the endpoint sends none).

        Extra keyword arguments go into the request body (e.g. ``seed=0``).

        Example:
            >>> endpoint.complete([{"role": "user", "content": "Hello"}], max_tokens=8)
        """
        data = self.request(messages, max_tokens=max_tokens, temperature=temperature, **body)
        try:
            content = data["choices"][0]["message"].get("content")
        except (KeyError, IndexError, TypeError, AttributeError):
            raise EndpointError(
                f"{display_url(self.url)} answered without choices[0].message: not an "
                "OpenAI-compatible chat-completions response"
            ) from None
        return content if isinstance(content, str) else ""

    def request(self, messages: Sequence[Mapping[str, str]], **body: Any) -> dict:
        """POST one chat-completions request and return the decoded JSON answer."""
        payload = {"model": self.model, "messages": list(messages), **body}
        if self.extra_body:
            payload.update(self.extra_body)
        key = os.environ.get(self.api_key_env) or None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        where = display_url(self.url)
        try:
            response = self._session.post(
                self.url, json=payload, headers=headers, timeout=self.timeout
            )
        except requests.RequestException as err:
            # The exception text names the URL, never the headers; the key is redacted anyway.
            raise EndpointError(
                _redact(f"could not reach {where}: {type(err).__name__}: {err}", key)
            ) from None
        if response.status_code >= 400:
            hint = f" (is ${self.api_key_env} set?)" if response.status_code in (401, 403) else ""
            message = _error_message(response)
            raise EndpointError(
                _redact(f"{where} answered {response.status_code}: {message}{hint}", key),
                response.status_code,
            )
        try:
            return response.json()
        except ValueError:
            raise EndpointError(f"{where} answered with a body that is not JSON") from None


def _error_message(response: requests.Response) -> str:
    try:
        error = response.json().get("error")
        message = error.get("message") if isinstance(error, dict) else error
    except (ValueError, AttributeError):
        message = None
    return str(message or response.text or response.reason)[:500]


def _redact(text: str, key: str | None) -> str:
    # Some services quote the key they were given in their error message.
    return text.replace(key, "***") if key else text
