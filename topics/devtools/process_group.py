"""A group of named child processes with one prefixed output stream.

This module owns the process side of a local cluster, and nothing about DPS: start a command
under a label (in its own session, so a Ctrl-C reaches only the parent, which stops the
children in order), copy each line it prints to ``emit`` as ``[label] line``, tell which child
exited, and stop them all (SIGTERM, then SIGKILL after a timeout). Whatever a child creates is
for this user only (umask 077: a database ``migrate`` creates, a node's files).
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

DEFAULT_STOP_TIMEOUT = 5.0
PRIVATE_UMASK = 0o077
_POLL_INTERVAL = 0.1


class ClusterError(RuntimeError):
    """The cluster could not start, or one of its processes died."""


class ClusterInterrupted(ClusterError):
    """A stop was requested (Ctrl-C, SIGTERM) while the cluster was still starting."""


@dataclass
class Child:
    """A running child process and the thread that copies its output to ours."""

    label: str
    proc: subprocess.Popen[str]
    pump: threading.Thread
    started: float  # time.monotonic() at spawn


class ProcessGroup:
    """Children started in ``cwd``; ``emit`` receives every output line (the group's own as
    ``[name] message``), ``on_line(label, line)`` sees each line of a child first (to notice a
    readiness line)."""

    def __init__(self, cwd: Path, emit: Callable[[str], None], *, name: str = "runcluster",
                 on_line: Callable[[str, str], None] | None = None) -> None:
        self.cwd = cwd
        self.name = name
        self._emit = emit
        self._on_line = on_line
        self._emit_lock = threading.Lock()  # one pump thread per child: keep lines whole
        self._lock = threading.Lock()  # a supervisor thread replaces children
        self._children: list[Child] = []

    def spawn(self, label: str, command: list[str], env: Mapping[str, str]) -> Child:
        proc = subprocess.Popen(
            command, cwd=self.cwd, env=dict(env), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
            bufsize=1, start_new_session=True, umask=PRIVATE_UMASK,
        )
        pump = threading.Thread(target=self._pump, args=(label, proc.stdout), daemon=True,
                                name=f"dps-log-{label}")
        pump.start()
        child = Child(label, proc, pump, time.monotonic())
        with self._lock:
            self._children.append(child)
        return child

    def _pump(self, label: str, stream: IO[str]) -> None:
        for line in stream:
            if self._on_line is not None:
                self._on_line(label, line)
            self.write(f"[{label}] {line.rstrip()}")

    def say(self, message: str) -> None:
        """Emit one line of the group's own (not a child's) output."""
        self.write(f"[{self.name}] {message}")

    def write(self, line: str) -> None:
        with self._emit_lock:
            self._emit(line)

    def pids(self) -> dict[str, int]:
        """The pid of every child now, by label."""
        with self._lock:
            return {c.label: c.proc.pid for c in self._children}

    def poll(self) -> str | None:
        """Describe the first child that has exited, or return None if all are running."""
        with self._lock:
            children = list(self._children)
        for child in children:
            code = child.proc.poll()
            if code is not None:
                return f"{child.label} exited unexpectedly with exit code {code}"
        return None

    def take_exited(self) -> list[Child]:
        """Forget and return the children that have exited (their output fully copied)."""
        with self._lock:
            exited = [c for c in self._children if c.proc.poll() is not None]
            for child in exited:
                self._children.remove(child)
        for child in exited:
            child.pump.join(timeout=1.0)  # its last lines come before what the caller says
        return exited

    def run(self, label: str, command: list[str], env: Mapping[str, str],
            check_stop: Callable[[], None]) -> int:
        """Run ``command`` to its end (``check_stop`` may raise meanwhile); its exit code."""
        child = self.spawn(label, command, env)
        try:
            while child.proc.poll() is None:
                check_stop()
                time.sleep(_POLL_INTERVAL)
        finally:
            if child.proc.poll() is not None:
                child.pump.join()
                with self._lock:
                    self._children.remove(child)
        return child.proc.returncode

    def kill(self, label: str, signum: int = signal.SIGKILL,
             timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Stop the child ``label`` with ``signum`` and forget it (``poll`` no longer sees it)."""
        with self._lock:
            child = next(c for c in self._children if c.label == label)
            self._children.remove(child)
        _signal_group(child.proc, signum)
        child.proc.wait(timeout)
        child.pump.join(timeout=1.0)

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Stop every child: SIGTERM, SIGKILL for those still running after ``timeout``."""
        with self._lock:
            children, self._children = self._children, []
        for child in children:
            _signal_group(child.proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in children:
            try:
                child.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"{child.label} did not stop within {timeout:g}s; killing it")
                _signal_group(child.proc, signal.SIGKILL)
                child.proc.wait()
        for child in children:
            child.pump.join(timeout=1.0)  # flush the last lines; a stray grandchild can't block us


def _signal_group(proc: subprocess.Popen[str], signum: int) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signum)
    except ProcessLookupError:
        pass
