"""Frame headers for direct writes, and the fallback for servers this module does not know."""
from __future__ import annotations

import functools
import struct

import pytest

from topics.adapters.direct_frames import binary_frame_header, direct_frames_for, text_frame_header


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


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_binary_headers_differ_from_text_only_in_the_opcode(size):
    text, binary = text_frame_header(size), binary_frame_header(size)
    assert binary[0] == 0x82 and binary[1:] == text[1:]


async def _plain_send(message):
    return None


class _Unknown:
    def handle_reply(self, protocol, message):
        return None


def test_an_unknown_server_gets_no_direct_writer():
    assert direct_frames_for(_plain_send) is None
    assert direct_frames_for(functools.partial(_Unknown().handle_reply, object())) is None


def test_a_fallback_to_asgi_send_is_counted_every_time_and_logged_once(caplog, monkeypatch):
    from topics.adapters import direct_frames
    from topics.transport import ws_counters

    monkeypatch.setattr(direct_frames, "_fallback_logged", False)
    before = ws_counters.COUNTS.direct_frame_fallbacks
    with caplog.at_level("WARNING", logger="topics.adapters.direct_frames"):
        for _ in range(3):
            assert direct_frames_for(_plain_send) is None
    assert ws_counters.COUNTS.direct_frame_fallbacks == before + 3
    warnings = [r for r in caplog.records if "direct frames unavailable" in r.getMessage()]
    assert len(warnings) == 1
