"""A small async Phoenix Channels client for end-to-end tests, on the ``websockets`` library.

It speaks V2 (``[join_ref, ref, topic, event, payload]``) or V1 (``{"topic", "event", ...}``)
JSON frames, hands out string refs, and keeps every frame it received but has not yet been asked
for, so waiting for one reply never loses a push that arrived before it::

    async with await PhoenixClient.connect(url) as client:
        reply = await client.join("topics:matrix")
        await client.publish("topics:matrix", "event", {"message": "hi"})
        [push] = await client.pushes("topics:matrix", 1)
"""
from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

DEFAULT_TIMEOUT = 10.0
SOCKET_TOPIC = "phoenix"


def socket_url(port: int, vsn: str = "2.0.0", host: str = "127.0.0.1") -> str:
    """The Phoenix socket endpoint of a WS node."""
    return f"ws://{host}:{port}/socket/websocket?vsn={vsn}"


@dataclass(frozen=True)
class Frame:
    """One decoded Phoenix message, whatever the serializer; ``raw`` is the frame as received."""

    join_ref: Any
    ref: Any
    topic: Any
    event: Any
    payload: Any
    raw: str | bytes = ""

    def as_list(self) -> list[Any]:
        return [self.join_ref, self.ref, self.topic, self.event, self.payload]

    @property
    def is_push(self) -> bool:
        """A server push of a published message (not a reply, not a close)."""
        return self.ref is None and isinstance(self.event, str) and not self.event.startswith("phx_")

    @property
    def status(self) -> Any:
        return self.payload.get("status") if isinstance(self.payload, dict) else None

    @property
    def response(self) -> Any:
        return self.payload.get("response") if isinstance(self.payload, dict) else None


class ClosedBeforeFrame(AssertionError):
    """The server closed the connection while a frame was still expected."""


class PhoenixClient:
    """One Phoenix socket connection. Not safe for concurrent readers."""

    def __init__(self, ws: ClientConnection, vsn: str = "2.0.0") -> None:
        self.ws = ws
        self.vsn = vsn
        self._refs = itertools.count(1)
        self._pending: list[Frame] = []  # received, not yet consumed, in arrival order
        self.join_refs: dict[str, str] = {}

    @classmethod
    async def connect(cls, url: str, *, timeout: float = DEFAULT_TIMEOUT, **kwargs: Any) -> Self:
        """Open a socket to ``url`` (its ``vsn`` query parameter picks the frame format)."""
        query = dict(p.split("=", 1) for p in urlsplit(url).query.split("&") if "=" in p)
        kwargs.setdefault("ping_interval", None)  # no client keepalive: tests control traffic
        kwargs.setdefault("open_timeout", timeout)
        kwargs.setdefault("max_size", None)
        ws = await connect(url, **kwargs)
        return cls(ws, query.get("vsn", "1.0.0"))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        await self.ws.close()

    def next_ref(self) -> str:
        return str(next(self._refs))

    # --- sending --------------------------------------------------------------------------

    def encode(self, join_ref: Any, ref: Any, topic: Any, event: Any, payload: Any) -> str:
        if self.vsn.startswith("1."):
            return json.dumps({"join_ref": join_ref, "ref": ref, "topic": topic, "event": event,
                               "payload": payload})
        return json.dumps([join_ref, ref, topic, event, payload])

    async def send_text(self, text: str) -> None:
        await self.ws.send(text)

    async def send_bytes(self, data: bytes) -> None:
        await self.ws.send(data)

    async def push(self, topic: Any, event: Any, payload: Any, *, join_ref: Any = ...,
                   ref: Any = ...) -> Any:
        """Send one message; ``join_ref`` defaults to this topic's current join. Returns the ref."""
        if ref is ...:
            ref = self.next_ref()
        if join_ref is ...:
            join_ref = self.join_refs.get(topic)
        await self.send_text(self.encode(join_ref, ref, topic, event, payload))
        return ref

    async def join(self, topic: str, payload: dict | None = None, *, join_ref: str | None = None,
                   timeout: float = DEFAULT_TIMEOUT) -> Frame:
        """Join ``topic`` and return the reply (ok or error); the join_ref is kept on ok.

        The join's ref is its join_ref (as phoenix.js does); pass ``join_ref`` to pick it.
        """
        join_ref = join_ref or self.next_ref()
        await self.push(topic, "phx_join", payload or {}, join_ref=join_ref, ref=join_ref)
        reply = await self.reply(join_ref, timeout=timeout)
        if reply.status == "ok":
            self.join_refs[topic] = join_ref
        return reply

    async def join_ok(self, topic: str, *, join_ref: str | None = None,
                      timeout: float = DEFAULT_TIMEOUT) -> str:
        """Join ``topic``, insist on an ok reply, and return the join_ref."""
        reply = await self.join(topic, join_ref=join_ref, timeout=timeout)
        assert reply.status == "ok", reply
        return self.join_refs[topic]

    async def leave(self, topic: str, *, timeout: float = DEFAULT_TIMEOUT) -> Frame:
        """Leave ``topic`` and return the reply (a ``phx_close`` may follow it)."""
        ref = await self.push(topic, "phx_leave", {})
        self.join_refs.pop(topic, None)
        return await self.reply(ref, timeout=timeout)

    async def publish(self, topic: str, event: Any, payload: Any, *, wait: bool = True,
                      timeout: float = DEFAULT_TIMEOUT) -> Any:
        """Publish ``[event, payload]``; return the reply, or only the ref if ``wait`` is false."""
        return await self.publish_raw(topic, [event, payload], wait=wait, timeout=timeout)

    async def publish_raw(self, topic: str, publish_payload: Any, *, wait: bool = True,
                          timeout: float = DEFAULT_TIMEOUT) -> Any:
        """Publish with an arbitrary (possibly malformed) ``publish`` payload."""
        ref = await self.push(topic, "publish", publish_payload)
        return await self.reply(ref, timeout=timeout) if wait else ref

    async def heartbeat(self, *, timeout: float = DEFAULT_TIMEOUT) -> Frame:
        ref = await self.push(SOCKET_TOPIC, "heartbeat", {}, join_ref=None)
        return await self.reply(ref, timeout=timeout)

    # --- receiving ------------------------------------------------------------------------

    def decode(self, raw: str | bytes) -> Frame:
        value = json.loads(raw)
        if isinstance(value, dict):
            return Frame(value.get("join_ref"), value.get("ref"), value.get("topic"),
                         value.get("event"), value.get("payload"), raw)
        return Frame(*value, raw=raw)

    async def _receive(self, timeout: float) -> Frame:
        try:
            raw = await asyncio.wait_for(self.ws.recv(), timeout)
        except ConnectionClosed as exc:
            raise ClosedBeforeFrame(f"connection closed: {exc}") from exc
        return self.decode(raw)

    async def recv_frame(self, timeout: float = DEFAULT_TIMEOUT) -> Frame:
        """The next frame not yet consumed (``TimeoutError`` if none arrives in time)."""
        if self._pending:
            return self._pending.pop(0)
        return await self._receive(timeout)

    async def wait_for(self, predicate: Callable[[Frame], bool],
                       timeout: float = DEFAULT_TIMEOUT) -> Frame:
        """The first frame matching ``predicate``; the others stay pending, in order."""
        for i, frame in enumerate(self._pending):
            if predicate(frame):
                return self._pending.pop(i)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no matching frame within {timeout}s; "
                                   f"pending: {[f.as_list() for f in self._pending]}")
            frame = await self._receive(remaining)
            if predicate(frame):
                return frame
            self._pending.append(frame)

    async def reply(self, ref: Any, timeout: float = DEFAULT_TIMEOUT) -> Frame:
        """The ``phx_reply`` to ``ref``."""
        return await self.wait_for(lambda f: f.event == "phx_reply" and f.ref == ref, timeout)

    async def pushes(self, topic: str, count: int, timeout: float = DEFAULT_TIMEOUT) -> list[Frame]:
        """The next ``count`` pushes on ``topic``, in arrival order."""
        return (await self.collect_pushes({topic: count}, timeout))[topic]

    async def collect_pushes(self, counts: dict[str, int],
                             timeout: float = DEFAULT_TIMEOUT) -> dict[str, list[Frame]]:
        """``counts[topic]`` pushes for each topic, in arrival order (other frames stay pending)."""
        got: dict[str, list[Frame]] = {topic: [] for topic in counts}

        def wanted(frame: Frame) -> bool:
            return frame.is_push and frame.topic in got and len(got[frame.topic]) < counts[frame.topic]

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(len(got[t]) < n for t, n in counts.items()):
            try:
                frame = await self.wait_for(wanted, max(0.0, deadline - loop.time()))
            except TimeoutError:
                missing = {t: n - len(got[t]) for t, n in counts.items() if len(got[t]) < n}
                raise TimeoutError(f"pushes still missing after {timeout}s: {missing}") from None
            got[frame.topic].append(frame)
        return got

    async def pushes_until(self, topic: str, marker_event: str,
                           timeout: float = DEFAULT_TIMEOUT) -> list[Frame]:
        """Every push on ``topic`` up to and including the first with event ``marker_event``.

        A topic has one order, so publishing a marker after a message and reading up to it
        shows every copy of that message delivered before the marker, without waiting blind.
        """
        frames: list[Frame] = []
        while True:
            frame = await self.wait_for(lambda f: f.is_push and f.topic == topic, timeout)
            frames.append(frame)
            if frame.event == marker_event:
                return frames

    async def expect_nothing(self, within: float = 0.3,
                             predicate: Callable[[Frame], bool] | None = None) -> None:
        """Assert that no (matching) frame is pending or arrives ``within`` seconds."""
        matches = predicate or (lambda f: True)
        unexpected = [f.as_list() for f in self._pending if matches(f)]
        assert not unexpected, f"unexpected frames: {unexpected}"
        try:
            frame = await self.wait_for(matches, within)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected frame: {frame.as_list()}")

    async def wait_closed(self, timeout: float = DEFAULT_TIMEOUT) -> int | None:
        """Wait for the server to close the connection; return the close code it sent."""
        async def drain() -> None:
            try:
                while True:
                    self._pending.append(self.decode(await self.ws.recv()))
            except ConnectionClosed:
                return

        await asyncio.wait_for(drain(), timeout)
        return self.ws.close_code
