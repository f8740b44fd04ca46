"""The server patches' catalogue: switches, version windows, what they decide; the pieces of the
patches that are pure logic (credential redaction, websockets' frame boundary)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from websockets.server import ServerProtocol

from topics.adapters import registry
from topics.adapters.access_log import credential_pattern, redact
from topics.adapters.direct_receive import _innermost

ROOT = Path(__file__).resolve().parents[2]
INSIDE = {"daphne": "4.2.3", "Twisted": "26.10.0", "autobahn": "26.11.1", "uvicorn": "0.54.0",
          "websockets": "17.4"}


def test_release_numbers_ignore_suffixes() -> None:
    assert registry.release("26.10.0rc1") == (26, 10, 0)
    assert registry.release("0.54.0") == (0, 54, 0)
    assert registry.release("dev") == ()


@pytest.mark.parametrize(("version", "admitted"), [
    ("4.2.2", False), ("4.2.3", True), ("4.2.9", True), ("4.3.0", False), ("5.0", False)])
def test_a_window_admits_its_tested_minor_version_only(version: str, admitted: bool) -> None:
    assert registry.DAPHNE_W.admits(version) is admitted


def test_every_patch_is_on_inside_its_windows() -> None:
    status, outside = registry.statuses(dict.fromkeys(registry.NAMES, True), INSIDE.get)
    assert set(status.values()) == {registry.ON} and not outside
    assert len(status) == len(registry.PATCHES)


def test_a_version_outside_a_window_turns_off_only_the_patches_that_touch_it() -> None:
    versions = {**INSIDE, "Twisted": "27.1.0"}
    status, outside = registry.statuses(dict.fromkeys(registry.NAMES, True), versions.get)
    off = {key for key, value in status.items() if value == registry.OUT_OF_WINDOW}
    assert off == {("inbound_backpressure", "daphne"), ("daphne_scans", "daphne"),
                   ("direct_frames", "daphne"), ("direct_receive", "daphne")}
    assert outside == {(registry.TWISTED_W, "27.1.0"): [
        "inbound_backpressure", "daphne_scans", "direct_frames", "direct_receive"]}
    assert status["direct_frames", "uvicorn"] == registry.ON


def test_a_server_not_installed_is_absent_not_a_fallback() -> None:
    versions = {k: v for k, v in INSIDE.items() if k != "uvicorn"}
    status, outside = registry.statuses(dict.fromkeys(registry.NAMES, True), versions.get)
    assert status["direct_frames", "uvicorn"] == registry.ABSENT and not outside


def test_switches_come_from_the_settings(settings) -> None:
    settings.DPS_SERVER_PATCHES = {"*": False, "daphne_scans": True}
    settings.DPS_DIRECT_FRAMES = True
    on = registry.switches()
    assert [name for name, value in on.items() if value] == ["daphne_scans"]
    status, _ = registry.statuses(on, INSIDE.get)
    assert status["daphne_scans", "daphne"] == registry.ON
    assert status["close_codes", "daphne"] == registry.SWITCHED_OFF


def test_dps_direct_frames_off_switches_off_both_direct_paths(settings) -> None:
    settings.DPS_SERVER_PATCHES = {}
    settings.DPS_DIRECT_FRAMES = False
    on = registry.switches()
    assert not on["direct_frames"] and not on["direct_receive"] and on["daphne_scans"]


def test_an_unknown_switch_is_a_configuration_error(settings) -> None:
    settings.DPS_SERVER_PATCHES = {"direct_frame": False}
    with pytest.raises(ImproperlyConfigured, match="direct_frame"):
        registry.switches()


def test_the_pinned_versions_are_inside_every_window() -> None:
    pins = dict(re.findall(r"^([A-Za-z]+)==([\w.]+)", (ROOT / "requirements.txt").read_text(),
                           re.MULTILINE))
    for patch in registry.PATCHES:
        for window in patch.windows:
            assert window.admits(pins[window.distribution]), (patch, pins[window.distribution])


def test_the_channel_layer_imports_nothing_about_asgi_servers() -> None:
    servers = {"daphne", "twisted", "autobahn", "uvicorn", "websockets", "hypercorn"}
    for path in (ROOT / "channel_layer").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not {name.split(".")[0] for name in names} & servers, path


def test_credential_parameters_are_redacted_and_others_kept() -> None:
    pattern = credential_pattern()
    line = ('"WebSocket /socket/websocket?vsn=2.0.0&token=SFMyNTY.abc&AUTHTOKEN=x&m=1'
            '&access_token=y&stoken=kept" 403')
    assert redact(line, pattern) == ('"WebSocket /socket/websocket?vsn=2.0.0&token=[redacted]'
                                     '&AUTHTOKEN=[redacted]&m=1&access_token=[redacted]'
                                     '&stoken=kept" 403')


def _open_protocol() -> ServerProtocol:
    protocol = ServerProtocol()
    protocol.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                          b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                          b"Sec-WebSocket-Version: 13\r\n\r\n")
    protocol.send_response(protocol.accept(protocol.events_received()[0]))
    return protocol


def test_websockets_parser_is_at_a_frame_boundary_only_between_frames() -> None:
    """An empty buffer is no boundary: after a frame's header and mask the parser waits for
    its payload (the probe direct receive used to take for new frames)."""
    from websockets.streams import StreamReader

    boundary = StreamReader.at_eof.__code__
    protocol = _open_protocol()
    assert _innermost(protocol.parser).gi_code is boundary
    protocol.receive_data(bytes([0x82, 0x85]) + b"\0\0\0\0")  # header and mask of 5 bytes
    assert not protocol.reader.buffer
    assert _innermost(protocol.parser).gi_code is not boundary
    protocol.receive_data(b"hello")
    assert _innermost(protocol.parser).gi_code is boundary
    assert protocol.events_received()[0].data == b"hello"


def test_outside_its_window_one_warning_names_the_version_and_the_patches_are_counted(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, settings) -> None:
    from topics.transport import ws_counters

    settings.DPS_SERVER_PATCHES = {}
    versions = {**INSIDE, "uvicorn": "0.60.1"}
    monkeypatch.setattr(registry, "_status", None)
    monkeypatch.setattr(registry, "installed_version", versions.get)
    before = ws_counters.COUNTS.server_patch_fallbacks
    with caplog.at_level("WARNING", logger="topics.adapters"):
        registry.decide()
        registry.decide()  # decided once per process
    warnings = [r.getMessage() for r in caplog.records if r.name == "topics.adapters"]
    assert len(warnings) == 1 and "uvicorn 0.60.1" in warnings[0], warnings
    assert ws_counters.COUNTS.server_patch_fallbacks == before + 4  # uvicorn's four patches
    assert not registry.active("direct_frames", "uvicorn")
    assert registry.active("direct_frames", "daphne")
