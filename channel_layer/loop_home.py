"""Where a node's runtime lives: which event loop, started how, and how callers get onto it.

Django runs consumers on the server's loop, sync code on loops that ``async_to_sync`` creates
and throws away, tests on their own loops. Redis connections and the inbox reader must live on
a loop that lasts as long as the process. Where that loop is (``runtime_loop``):

- ``server``: the ASGI server's own loop (daphne, uvicorn: one loop in the main thread for the
  process's life). Consumers and the runtime share it, so a publish and its deliveries need
  no thread hop (the README's benchmark section has the A/B).
- ``thread``: a private I/O thread with its own loop; calls from any loop hop onto it
  (``call``), and deliveries hop back by waking the receiver's loop once per inbox batch.
- ``auto`` (the default): ``server`` when the process is an ASGI server program, else
  ``thread`` (tests, management commands, ``runserver``).
"""
from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

logger = logging.getLogger("channel_layer.loop_home")
T = TypeVar("T")

# Programs whose loop runs in the main thread for the whole life of the process.
ASGI_SERVER_PROGRAMS = frozenset({"daphne", "uvicorn", "hypercorn", "granian"})


def started_as_asgi_server() -> bool:
    """Whether this process is an ASGI server program (``daphne ...``, ``python -m uvicorn``)."""
    main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    names = {os.path.basename(sys.argv[0]) if sys.argv else ""}
    if main_spec is not None and main_spec.name:
        names.add(main_spec.name.split(".")[0])
    return not names.isdisjoint(ASGI_SERVER_PROGRAMS)


def uses_server_loop(setting: str) -> bool:
    return setting == "server" or (setting == "auto" and started_as_asgi_server())


class LoopHome:
    """Starts the runtime (``boot``) on its loop once, and runs callers' coroutines there.

    ``abandon`` cleans up after a boot that failed; ``forget`` drops what belonged to a loop
    that is gone (its tasks, connections and futures went with it).
    """

    def __init__(self, name: str, setting: str, boot: Callable[[], Awaitable[None]],
                 abandon: Callable[[], Awaitable[None]], forget: Callable[[], None]) -> None:
        self.name = name
        self.on_server_loop = uses_server_loop(setting)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._boot, self._abandon, self._forget = boot, abandon, forget
        self._thread: threading.Thread | None = None
        self._booting: asyncio.Task | None = None  # the boot, when on the server's loop
        self._start_lock = threading.Lock()

    @property
    def started(self) -> bool:
        return self.loop is not None or self._thread is not None

    def reconfigure(self, setting: str) -> None:
        if not self.started:
            self.on_server_loop = uses_server_loop(setting)

    def ensure_started(self) -> None:
        if self.on_server_loop:
            self._start_on_running_loop()
            return
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is not None:
                return
            ready = threading.Event()
            failure: list[BaseException] = []
            thread = threading.Thread(target=self._thread_main, args=(ready, failure),
                                      name=f"dps-runtime-{self.name}", daemon=True)
            thread.start()
            ready.wait()
            if failure:
                thread.join()
                raise failure[0]
            self._thread = thread

    def _thread_main(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self.loop = loop
        try:
            loop.run_until_complete(self._boot())
        except BaseException as exc:
            failure.append(exc)
            loop.run_until_complete(self._abandon())
            loop.close()
            self.loop = None
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    def _start_on_running_loop(self) -> None:
        if self._booting is not None:
            if not self.loop.is_closed():
                return
            self.forget_loop()  # that loop is gone (a test's, say): start on this one
        if threading.current_thread() is not threading.main_thread():
            # Not the server's loop (a loop async_to_sync made in a worker thread, say): the
            # runtime would die with it. Run this process's runtime on its own thread instead.
            logger.info("the layer started outside the server's loop: using an I/O thread")
            self.on_server_loop = False
            self.ensure_started()
            return
        self.loop = asyncio.get_running_loop()
        self._booting = self.loop.create_task(self._boot_on_server_loop())

    async def _boot_on_server_loop(self) -> None:
        try:
            await self._boot()
        except BaseException:
            await self._abandon()
            self.forget_loop()  # the next call tries again
            raise

    async def _after_boot(self, booting: asyncio.Task, coro: Awaitable[T]) -> T:
        try:
            await asyncio.shield(booting)
        except BaseException:
            coro.close()  # type: ignore[attr-defined]
            raise
        return await coro

    async def call(self, coro: Awaitable[T]) -> T:
        """Run ``coro`` on the runtime's loop and wait for it from whatever loop is calling."""
        self.ensure_started()
        booting = self._booting
        if booting is not None and not booting.done():  # only the first calls wait for it
            coro = self._after_boot(booting, coro)
        if asyncio.get_running_loop() is self.loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def forget_loop(self) -> None:
        self.loop, self._booting = None, None
        self._forget()

    async def close(self, shutdown: Callable[[], Awaitable[None]]) -> None:
        """Run ``shutdown`` on the runtime's loop, then leave that loop (ending the thread)."""
        if self.on_server_loop:
            if self._booting is None:
                return
            try:
                if not self.loop.is_closed():
                    await self.call(shutdown())
            finally:
                self.forget_loop()
            return
        thread, loop = self._thread, self.loop
        if thread is None or loop is None:
            return
        try:
            await self.call(shutdown())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            await asyncio.get_running_loop().run_in_executor(None, thread.join)
            self._thread = None
            self.loop = None
