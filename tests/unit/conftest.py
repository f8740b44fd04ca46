"""The unit suite's rule, enforced: no processes, no network, no sleeps.

While a test under ``tests/unit`` runs (its setup, call and teardown), every way this suite
could start a process, reach a server or wait on the real clock raises
:class:`UnitTestBoundary` instead:

- processes: ``subprocess`` (``Popen``, ``run``, ``check_output``, and asyncio's subprocesses,
  which are built on it), ``os.fork``, ``os.posix_spawn``, ``os.system``;
- network: ``connect``/``connect_ex`` on any socket (Redis, a test server, DNS over TCP);
  asyncio's own wake-up pipe is a ``socketpair`` and does not connect;
- sleeps: ``time.sleep`` and ``asyncio.sleep`` with a delay above zero, called from a test, a
  fixture, ``tests/support`` or a library's test helper (asgiref's ``receive_nothing`` polls
  the real clock). The product's own timers (a heartbeat loop, the embedded transport's poll)
  are the code under test and may sleep in their background tasks; a test never waits for
  them on the real clock. ``asyncio.sleep(0)`` only yields to the loop and stays allowed.

The patches are installed when this conftest is imported, before the unit modules are, so a
module's ``from time import sleep`` gets the guarded function too; outside unit tests they pass
straight through. A test that needs any of these belongs in ``tests/integration``; one that
waits for expiry or a timeout drives the unit's clock instead.
"""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

UNIT_DIR = Path(__file__).resolve().parent
PRODUCT_DIRS = tuple(str(UNIT_DIR.parents[1] / name) + "/"
                     for name in ("channel_layer", "topics", "dps_site"))


class UnitTestBoundary(AssertionError):
    """A unit test reached outside the process or onto the real clock."""


_guard = {"test": ""}  # the unit test now running ("" when none)


def _refuse(what: str) -> None:
    caller = sys._getframe(2)  # the frame that called the guarded function
    raise UnitTestBoundary(
        f"{_guard['test']}: {what} at {caller.f_code.co_filename}:{caller.f_lineno} in a unit "
        "test (tests/unit uses no processes, no network, no sleeps; move it to "
        "tests/integration or drive the unit's clock)")


def _guarded(original: Callable, what: str, allow: Callable[..., bool] | None = None) -> Callable:
    def guard(*args, **kwargs):
        if _guard["test"] and not (allow and allow(*args, **kwargs)):
            _refuse(what)
        return original(*args, **kwargs)

    guard.__wrapped__ = original
    guard.__name__ = getattr(original, "__name__", "guard")
    return guard


def _called_by_product(depth: int) -> bool:
    return sys._getframe(depth).f_code.co_filename.startswith(PRODUCT_DIRS)


def _no_delay(*args, **kwargs) -> bool:
    """A ``time.sleep`` that waits for nothing, or the product's own."""
    delay = args[0] if args else kwargs.get("secs", 0)
    return delay <= 0 or _called_by_product(3)


def _async_guarded_sleep(original: Callable) -> Callable:
    async def sleep(delay: float, result: object = None) -> object:
        if _guard["test"] and delay > 0 and not _called_by_product(2):
            _refuse(f"asyncio.sleep({delay})")
        return await original(delay, result)

    sleep.__wrapped__ = original
    return sleep


def _install() -> None:
    if getattr(time.sleep, "__wrapped__", None) is not None:
        return  # installed once per process
    time.sleep = _guarded(time.sleep, "time.sleep", _no_delay)
    asyncio.sleep = _async_guarded_sleep(asyncio.sleep)
    asyncio.tasks.sleep = asyncio.sleep
    subprocess.Popen._execute_child = _guarded(subprocess.Popen._execute_child,
                                               "starting a process")
    for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system"):
        if hasattr(os, name):
            setattr(os, name, _guarded(getattr(os, name), f"os.{name}"))
    socket.socket.connect = _guarded(socket.socket.connect, "a socket connect")
    socket.socket.connect_ex = _guarded(socket.socket.connect_ex, "a socket connect")


_install()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Arms the guard for a unit test's setup, call and teardown."""
    if Path(str(item.path)).resolve().is_relative_to(UNIT_DIR):
        _guard["test"] = item.nodeid
    try:
        return (yield)
    finally:
        _guard["test"] = ""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """The session's last teardown also stops the session's fixtures (the Redis servers the
    integration and e2e tests started, which wait for their processes): that is not the unit
    test's own teardown, so the guard stands down for it."""
    if nextitem is None:
        _guard["test"] = ""
    return (yield)
