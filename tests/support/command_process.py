"""A command a test starts (``manage.py runcluster``): its output read line by line on a thread,
so the test can wait for a line, and a stop that cannot leave it running."""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time


class OutputLines:
    """Collects a child's output lines on a thread so the test can wait for one."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.all: list[str] = []
        self._proc = proc
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._queue.put(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self._proc.poll() is not None:
                    break  # it exited and its output is all read: the line will never come
                continue
            self.all.append(line)
            if text in line:
                return line
        output = "\n".join(self.all)
        code = self._proc.poll()
        raise AssertionError(f"no line with {text!r} (exit code {code}); output:\n{output}")

    def drain(self) -> list[str]:
        while not self._queue.empty():
            self.all.append(self._queue.get())
        return self.all


def stop_gracefully(proc: subprocess.Popen[str], signum: int = signal.SIGTERM,
                    timeout: float = 15.0) -> None:
    """Send ``signum`` to a running command; kill its whole session if it is still running
    after ``timeout`` (a failed test must not leave a cluster running)."""
    if proc.poll() is not None:
        return
    proc.send_signal(signum)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
