"""Frame headers for direct writes, and the fallback for servers this module does not know."""
from __future__ import annotations

import functools
import struct

import pytest

from topics.direct_frames import direct_frames_for, text_frame_header


@pytest.mark.parametrize(("size", "header"), [
    (0, b"\x81\x00"),
    (125, b"\x81\x7d"),
    (126, b"\x81\x7e" + struct.pack("!H", 126)),
    (65535, b"\x81\x7e" + struct.pack("!H", 65535)),
    (65536, b"\x81\x7f" + struct.pack("!Q", 65536)),
])
def test_headers_follow_rfc_6455_length_encoding(size, header):
    # FIN + text opcode, no RSV bit (not compressed), no mask bit (server to client).
    assert text_frame_header(size) == header


async def _plain_send(message):
    return None


class _Unknown:
    def handle_reply(self, protocol, message):
        return None


def test_an_unknown_server_gets_no_direct_writer():
    assert direct_frames_for(_plain_send) is None
    assert direct_frames_for(functools.partial(_Unknown().handle_reply, object())) is None
