"""A Channels ``AsyncConsumer`` with a lean receive path: no task and no ``asyncio.wait`` per frame.

Channels' ``AsyncConsumer.__call__`` runs ``await_many_dispatch``, which makes a task for the
next ASGI message and one for the next channel message, and an ``asyncio.wait`` over both, for
every frame a client sends: on a busy WS node that machinery cost more than handling the frame.
:class:`LeanAsyncConsumer` keeps Channels' contract (``as_asgi()``, ``channel_layer``,
``channel_name``, ``dispatch`` by message type, ``StopConsumer``, one message handled at a time)
and replaces only that loop:

- the client's messages are awaited and dispatched in a plain loop on the connection's task;
- messages on the consumer's own channel (what a layer delivers through its queue) have one
  long-lived listener task;
- the two take turns on one lock, so one message is handled at a time, as in Channels (an
  uncontended ``asyncio.Lock`` costs no loop iteration);
- a ``StopConsumer`` raised by a handler of either ends the consumer; any other error of the
  listener ends it with that error, as ``await_many_dispatch`` would.

``dispatch`` does not close stale database connections before every message as Channels' does
(a thread hop per message): a subclass that uses the ORM in a handler uses
``database_sync_to_async``, which does.
"""
from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from channels.consumer import AsyncConsumer, get_handler_name
from channels.exceptions import StopConsumer
from channels.layers import get_channel_layer


def handler_of(consumer: AsyncConsumer, message: dict[str, Any]) -> Callable[[dict], Awaitable[None]]:
    """The consumer's method for ``message``'s type (``websocket.receive`` → ``websocket_receive``)."""
    handler = getattr(consumer, get_handler_name(message), None)
    if handler is None:
        raise ValueError(f"no handler for message type {message['type']!r}")
    return handler


class LeanAsyncConsumer(AsyncConsumer):
    """``AsyncConsumer`` with the receive loop described in the module docstring."""

    _listener_failure: BaseException | None = None
    # A client message taken from ASGI receive and not yet handled (a subclass that reads
    # frames by other means must not let them overtake it).
    taken_from_client = 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        self.scope = scope
        self._turn = asyncio.Lock()
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.base_send = send
        listener = None
        if self.channel_layer is not None:
            self.channel_name = await self.channel_layer.new_channel()
            self.channel_receive = functools.partial(self.channel_layer.receive,
                                                     self.channel_name)
            listener = asyncio.get_running_loop().create_task(
                self._listen_channel(asyncio.current_task()))
        try:
            turn = self._turn
            while True:
                message = await receive()
                self.taken_from_client += 1
                try:
                    async with turn:
                        await self.dispatch(message)
                finally:
                    self.taken_from_client -= 1
        except StopConsumer:
            pass
        except asyncio.CancelledError:
            failure = self._listener_failure
            if isinstance(failure, StopConsumer):  # a channel message's handler ended it
                return
            if failure is not None:  # the listener's error ends the consumer, as in Channels
                raise failure from None
            raise
        finally:
            if listener is not None:
                listener.cancel()

    async def _listen_channel(self, consumer: asyncio.Task) -> None:
        try:
            turn = self._turn
            while True:
                message = await self.channel_receive()
                async with turn:
                    await self.dispatch(message)
        except StopConsumer:
            self._listener_failure = StopConsumer()
            consumer.cancel()
        except Exception as exc:
            self._listener_failure = exc
            consumer.cancel()

    async def dispatch(self, message: dict[str, Any]) -> None:
        await handler_of(self, message)(message)
