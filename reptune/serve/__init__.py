"""An OpenAI-compatible chat server for a base, steered or tuned model, steered per request.

Routes: ``POST /v1/chat/completions`` (OpenAI schema: ``messages``, ``max_tokens``,
``temperature`` (0 = greedy), ``top_p``, ``seed``, ``stop``, ``n`` = 1), ``GET /v1/models`` and
``GET /health``. Steering is chosen per request by a ``reptune`` object in the body (what OpenAI
clients send as ``extra_body``)::

    {"reptune": {"layers": [10], "coefficient": 0.15, "coefficient_unit": "residual_norm",
                 "mode": "add", "positions": "all"}}

It is applied exactly as :class:`reptune.steering.SteeredModel` would (same defaults: all layers
of the served vectors, unit ``residual_norm``, mode ``add``, positions ``all``). Requests are
checked before they are queued; a bad one gets a 4xx answer in the OpenAI error shape
(``{"error": {"message", "type", "param", "code"}}``) and the server goes on serving.
Generation runs in one worker thread, one request at a time, so concurrent requests never share
steering hooks and the event loop stays free to answer.

Example:
    >>> server = ChatServer(model, tokenizer, vectors, model_name="smollm2")
    >>> with BackgroundServer(server.app()) as running:
    ...     print(running.url)  # http://127.0.0.1:<free port>
"""

from .checks import RequestError, check_steering
from .running import BackgroundServer, serve_forever
from .server import ChatServer

__all__ = ["BackgroundServer", "ChatServer", "RequestError", "check_steering", "serve_forever"]
