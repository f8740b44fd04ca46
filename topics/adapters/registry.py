"""Which server patches are on in this process: the catalogue, each patch's switch and version
window, and the one call that installs them (:func:`install`, from ``topics.adapters``).

Every patch of daphne, Twisted, autobahn, uvicorn or websockets internals is listed in
:data:`PATCHES` with the distributions it touches and, for each, the versions it was tested
with (``docs/adapters.md`` has the table). A patch is on when:

- its switch is on: ``DPS_SERVER_PATCHES`` maps a patch's name to False to switch it off
  (``"*"`` sets the default of every name not given); ``DPS_DIRECT_FRAMES = False`` switches off
  ``direct_frames`` and ``direct_receive``;
- and every distribution it touches is installed at a version inside its window. Outside a
  window the patch stays off, one warning names the distribution and its version, and
  ``server_patch_fallbacks`` counts the patches it turned off: the server's own public path
  does the work (slower, never different).

Patches applied per connection (``direct_frames``, ``direct_receive``) ask :func:`active` when a
connection opens; the others are applied to the server's classes once, by :func:`install`.
"""
from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from topics.adapters.disconnects import register_server_disconnect_errors
from topics.transport import ws_counters

logger = logging.getLogger("topics.adapters")

DAPHNE, UVICORN = "daphne", "uvicorn"


@dataclass(frozen=True)
class Window:
    """The versions of one distribution a patch was tested with: ``lowest <= v < below``."""

    distribution: str
    lowest: tuple[int, ...]
    below: tuple[int, ...]

    def admits(self, version: str) -> bool:
        return self.lowest <= release(version) < self.below

    def __str__(self) -> str:
        return (f"{self.distribution}>={'.'.join(map(str, self.lowest))},"
                f"<{'.'.join(map(str, self.below))}")


def release(version: str) -> tuple[int, ...]:
    """The release numbers of a version string (``"26.10.0rc1"`` -> ``(26, 10, 0)``)."""
    match = re.match(r"\d+(?:\.\d+)*", version)
    return tuple(int(part) for part in match.group().split(".")) if match else ()


# The versions installed when each patch was last tested (requirements.txt pins them); a patch
# release of the same minor version is assumed compatible, anything newer is not.
DAPHNE_W = Window("daphne", (4, 2, 3), (4, 3))
TWISTED_W = Window("Twisted", (26, 10, 0), (26, 11))
AUTOBAHN_W = Window("autobahn", (26, 11, 1), (26, 12))
UVICORN_W = Window("uvicorn", (0, 54, 0), (0, 55))
WEBSOCKETS_W = Window("websockets", (17, 4), (17, 5))


@dataclass(frozen=True)
class Patch:
    """One patch of one server. ``apply`` ("module:function") patches the server's classes
    once; None: applied per connection, where the code asks :func:`active`."""

    name: str
    server: str
    windows: tuple[Window, ...]
    apply: str | None = None


PATCHES: tuple[Patch, ...] = (
    Patch("close_codes", DAPHNE, (DAPHNE_W, AUTOBAHN_W),
          "topics.adapters.daphne_close_codes:allow_protocol_close_codes"),
    Patch("close_on_error", DAPHNE, (DAPHNE_W, AUTOBAHN_W),
          "topics.adapters.daphne_close_codes:close_instead_of_dropping"),
    Patch("invalid_close", DAPHNE, (DAPHNE_W, AUTOBAHN_W),
          "topics.adapters.daphne_close_codes:answer_invalid_close_frames"),
    Patch("inbound_backpressure", DAPHNE, (DAPHNE_W, TWISTED_W),
          "topics.adapters.daphne_close_codes:apply_inbound_backpressure"),
    Patch("daphne_scans", DAPHNE, (DAPHNE_W, TWISTED_W),
          "topics.adapters.daphne_scans:visit_only_due_connections"),
    Patch("denial_response", DAPHNE, (DAPHNE_W, AUTOBAHN_W),
          "topics.adapters.daphne_denial:enable_daphne_denial_response"),
    Patch("access_log_redaction", DAPHNE, (DAPHNE_W,),
          "topics.adapters.access_log:redact_daphne_access_log"),
    Patch("direct_frames", DAPHNE, (DAPHNE_W, TWISTED_W, AUTOBAHN_W)),
    Patch("direct_receive", DAPHNE, (DAPHNE_W, TWISTED_W, AUTOBAHN_W)),
    Patch("quiet_utf8_errors", UVICORN, (UVICORN_W,),
          "topics.adapters.uvicorn_log:quiet_client_protocol_errors"),
    Patch("access_log_redaction", UVICORN, (UVICORN_W,),
          "topics.adapters.access_log:redact_uvicorn_access_log"),
    Patch("direct_frames", UVICORN, (UVICORN_W, WEBSOCKETS_W)),
    Patch("direct_receive", UVICORN, (UVICORN_W, WEBSOCKETS_W)),
)
NAMES = frozenset(patch.name for patch in PATCHES)

ON, SWITCHED_OFF, OUT_OF_WINDOW, ABSENT = "on", "switched off", "outside its version window", \
    "server not installed"

_status: dict[tuple[str, str], str] | None = None
_applied: set[Patch] = set()


def installed_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def switches() -> dict[str, bool]:
    """Each patch name's switch, from ``DPS_SERVER_PATCHES`` and ``DPS_DIRECT_FRAMES``."""
    given: dict[str, Any] = dict(getattr(settings, "DPS_SERVER_PATCHES", None) or {})
    unknown = set(given) - NAMES - {"*"}
    if unknown:
        raise ImproperlyConfigured(f"DPS_SERVER_PATCHES names no such patch: "
                                   f"{', '.join(sorted(unknown))} (known: "
                                   f"{', '.join(sorted(NAMES))})")
    default = bool(given.pop("*", True))
    result = {name: bool(given.get(name, default)) for name in NAMES}
    if not getattr(settings, "DPS_DIRECT_FRAMES", True):
        result["direct_frames"] = result["direct_receive"] = False
    return result


def statuses(on: dict[str, bool], version_of: Callable[[str], str | None]
             ) -> tuple[dict[tuple[str, str], str], dict[tuple[Window, str], list[str]]]:
    """Each patch's status by (name, server), and the patch names each (window, installed
    version) outside it turns off, given the switches and the installed versions."""
    status: dict[tuple[str, str], str] = {}
    outside: dict[tuple[Window, str], list[str]] = {}
    for patch in PATCHES:
        versions = [version_of(w.distribution) for w in patch.windows]
        if None in versions:
            status[patch.name, patch.server] = ABSENT
        elif not on[patch.name]:
            status[patch.name, patch.server] = SWITCHED_OFF
        else:
            misfits = [(w, v) for w, v in zip(patch.windows, versions, strict=True)
                       if not w.admits(v)]
            status[patch.name, patch.server] = OUT_OF_WINDOW if misfits else ON
            for misfit in misfits:
                outside.setdefault(misfit, []).append(patch.name)
    return status, outside


def decide() -> dict[tuple[str, str], str]:
    """This process's statuses (decided once), with one warning per distribution outside a
    window."""
    global _status
    if _status is not None:
        return _status
    status, outside = statuses(switches(), installed_version)
    for (window, version), names in outside.items():
        logger.warning("%s %s is outside the versions DPS's server patches were tested with "
                       "(%s): %s stay off, and the server's own path does their work",
                       window.distribution, version, window, ", ".join(names))
    ws_counters.COUNTS.server_patch_fallbacks += sum(
        1 for value in status.values() if value == OUT_OF_WINDOW)
    _status = status
    return status


def active(name: str, server: str) -> bool:
    """Whether patch ``name`` of ``server`` is on in this process."""
    return decide().get((name, server)) == ON


def install() -> dict[tuple[str, str], str]:
    """Apply every patch that is on (idempotent) and return each patch's status; register
    the servers' disconnect exceptions with the layer."""
    register_server_disconnect_errors()
    status = decide()
    for patch in PATCHES:
        if patch.apply is not None and patch not in _applied and status[
                patch.name, patch.server] == ON:
            module, function = patch.apply.split(":")
            getattr(importlib.import_module(module), function)()
            _applied.add(patch)
    return status
