"""Hand-made client frames and a collector of the answers, for tests that write raw bytes to a
node (``topics.devtools.benchmark.wsclient``) to control how frames are cut into reads."""
from __future__ import annotations

import asyncio
import json

from topics.devtools.benchmark.wsclient import OP_TEXT, RawWebSocket, client_frame, connect

WAIT_S = 20.0


def heartbeat(ref: str, padding: int = 0) -> bytes:
    # JSON allows whitespace: padding makes a frame that needs the 16-bit length.
    return client_frame(OP_TEXT, (f'[null,"{ref}","phoenix","heartbeat",{{}}' + " " * padding
                                  + "]").encode())


class Answers:
    """Every text frame the client receives, decoded, with a wait for a count."""

    def __init__(self) -> None:
        self.frames: list[list] = []
        self.changed = asyncio.Event()

    def __call__(self, text: str) -> None:
        self.frames.append(json.loads(text))
        self.changed.set()

    async def wait_for(self, count: int) -> list[list]:
        async with asyncio.timeout(WAIT_S):
            while len(self.frames) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.frames

    def refs(self) -> list[str]:
        return [frame[1] for frame in self.frames]


async def open_raw(url: str) -> tuple[RawWebSocket, Answers]:
    answers = Answers()
    return await connect(url, answers), answers
