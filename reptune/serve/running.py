"""Run a chat app: in a background thread (tests, notebooks, scripts) or until a signal (CLI)."""

from __future__ import annotations

import asyncio
import signal
import threading

from aiohttp import web

__all__ = ["BackgroundServer", "serve_forever"]


class BackgroundServer:
    """Serve ``app`` from a background thread; ``port=0`` takes a free port (see ``url``).

    Example:
        >>> with BackgroundServer(ChatServer(model, tok).app()) as running:
        ...     requests.get(running.url + "/v1/models").json()
    """

    def __init__(self, app: web.Application, host: str = "127.0.0.1", port: int = 0):
        self.app, self.host, self.port = app, host, port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def _up(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = self._runner.addresses[0][1]

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._up(), self._loop).result(timeout=30)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()


def serve_forever(app: web.Application, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve ``app`` until SIGINT/SIGTERM; prints the address once listening (``port=0``: free).

    Example:
        >>> serve_forever(ChatServer(model, tok).app(), port=8000)  # doctest: +SKIP
    """

    async def main() -> None:
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        bound = runner.addresses[0][1]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"reptune serve: listening on http://{host}:{bound}/v1", flush=True)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())
