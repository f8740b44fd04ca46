"""Proving that nothing more arrived without waiting on the clock: a marker sent behind it.

A topic's messages reach each member in one order (one owner, one queue per channel), so once a
marker broadcast after the action under test is a member's next frame, anything the action
wrongly sent that member (a second copy, a refused event, a reply meant for another) would have
been read first. This replaces asgiref's ``receive_nothing()``, which sleeps for its timeout.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable

from topics import api

MARKER_EVENT = "marker"


async def assert_marker_is_next(receive: Callable[[object], Awaitable[list]], topic: str,
                                *members: tuple[object, str]) -> None:
    """Broadcasts the marker on ``topic``; each ``(communicator, join_ref)`` member's next frame
    (read with the test's own ``receive``) must be it."""
    await api.abroadcast(topic, MARKER_EVENT, {})
    for member, join_ref in members:
        assert await receive(member) == [join_ref, None, topic, MARKER_EVENT, {}]
