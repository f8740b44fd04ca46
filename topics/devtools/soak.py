"""The soak run behind ``manage.py soak``: a supervised local cluster under churn and faults.

Stayers (members that stay joined the whole run, on ws-b, the node that is never killed) check
exactly-once and order on every topic; publishers on ws-b publish a numbered stream to each
topic; churners connect to either node, join, publish, leave, and some drop their TCP
connection without a close. A third of the way in a topic server is SIGKILLed, two thirds in a
WS node; supervision restarts both. The report counts, for the stayers, messages lost (a
publish that was answered ok but never arrived), duplicated and out of order, and the RSS of
every process at the start and the end.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import signal
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection, connect

from topics.devtools.embedded_redis import free_port_block
from topics.devtools.local_cluster import LocalCluster
from topics.devtools.supervisor import RestartPolicy

TOPICS = 20
STAYERS_PER_TOPIC = 2
PUBLISH_INTERVAL = 0.2  # per topic: 100 publishes/s over 20 topics
CHURN_INTERVAL = 0.1
HEARTBEAT_INTERVAL = 20.0


@dataclass
class SoakReport:
    minutes: float
    started: float = 0.0
    published_ok: int = 0
    publish_errors: int = 0
    stayers_dropped: int = 0
    expected: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    churn: Counter = field(default_factory=Counter)
    faults: list[str] = field(default_factory=list)
    rss_kib: dict[str, dict[str, int | None]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"soak: {self.minutes:g} min, {TOPICS} topics, "
               f"{TOPICS * STAYERS_PER_TOPIC} stayers ({self.stayers_dropped} closed by the "
               "server before the end, not counted)",
               f"publishes answered ok: {self.published_ok}, refused: {self.publish_errors}",
               f"stayer deliveries expected: {self.expected}; lost {self.lost}, duplicated "
               f"{self.duplicated}, out of order {self.out_of_order}",
               "churn: " + ", ".join(f"{k} {v}" for k, v in sorted(self.churn.items())),
               "faults: " + "; ".join(self.faults)]
        for name, rss in self.rss_kib.items():
            out.append(f"RSS {name}: start {rss.get('start')} KiB, end {rss.get('end')} KiB")
        return out


def rss_kib(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Stayer:
    def __init__(self, url: str, topic: str) -> None:
        self.url, self.topic = url, topic
        self.received: list[int] = []
        self.joined_at = 0.0
        self.dropped = False  # the server closed it before the end: it did not stay joined

    async def run(self, ready: asyncio.Event, stop: asyncio.Event) -> None:
        async with connect(self.url, ping_interval=None, open_timeout=30) as ws:
            await ws.send(json.dumps(["1", "1", self.topic, "phx_join", {}]))
            beating = asyncio.ensure_future(_heartbeats(ws))
            try:
                await self._receive(ws, ready, stop)
            finally:
                beating.cancel()
        self.dropped = not stop.is_set()

    async def _receive(self, ws: ClientConnection, ready: asyncio.Event,
                       stop: asyncio.Event) -> None:
        async for raw in ws:
            _, ref, _, event, payload = json.loads(raw)
            if ref == "1" and event == "phx_reply":
                self.joined_at = time.time()
                ready.set()
            elif ref is None and event == "event":
                self.received.append(payload["seq"])
            if stop.is_set():
                return


async def _heartbeats(ws: ClientConnection) -> None:
    """A member that only listens still sends Phoenix heartbeats, as phoenix.js does every
    30 s: otherwise the server closes it after DPS_IDLE_TIMEOUT (60 s)."""
    while True:
        await asyncio.sleep(HEARTBEAT_INTERVAL)
        await ws.send(json.dumps([None, "hb", "phoenix", "heartbeat", {}]))


class Publisher:
    """One stream of numbered publishes per topic; remembers which were answered ok, when."""

    def __init__(self, url: str, topics: list[str]) -> None:
        self.url, self.topics = url, topics
        self.ok: dict[str, list[tuple[int, float]]] = defaultdict(list)
        self.errors = 0
        self._sent: dict[str, tuple[str, int, float]] = {}

    async def run(self, stop: asyncio.Event) -> None:
        async with connect(self.url, ping_interval=None, open_timeout=30) as ws:
            for i, topic in enumerate(self.topics):
                await ws.send(json.dumps([f"j{i}", f"j{i}", topic, "phx_join", {}]))
            reader = asyncio.ensure_future(self._read(ws))
            seq = 0
            while not stop.is_set():
                for i, topic in enumerate(self.topics):
                    ref = f"{seq}-{i}"
                    self._sent[ref] = (topic, seq, time.time())
                    await ws.send(json.dumps([f"j{i}", ref, topic, "publish",
                                              ["event", {"seq": seq}]]))
                seq += 1
                await asyncio.sleep(PUBLISH_INTERVAL)  # the traffic's pace
            await asyncio.sleep(3)  # the last replies
            reader.cancel()

    async def _read(self, ws: ClientConnection) -> None:
        async for raw in ws:
            _, ref, _, event, payload = json.loads(raw)
            sent = self._sent.pop(ref, None) if event == "phx_reply" else None
            if sent is None:
                continue
            topic, seq, at = sent
            if payload.get("status") == "ok":
                self.ok[topic].append((seq, at))
            else:
                self.errors += 1


async def churn(urls: list[str], topics: list[str], stop: asyncio.Event,
                counts: Counter) -> None:
    rng = random.Random(9)
    while not stop.is_set():
        await asyncio.sleep(CHURN_INTERVAL)  # the churn's pace
        try:
            async with asyncio.timeout(10):
                ws = await connect(rng.choice(urls), ping_interval=None, open_timeout=5)
                topic = rng.choice(topics)
                await ws.send(json.dumps(["1", "1", topic, "phx_join", {}]))
                await ws.recv()
                counts["joins"] += 1
                if rng.random() < 0.3:
                    ws.transport.abort()  # an aborted TCP connection, no close frame
                    counts["aborted"] += 1
                    continue
                await ws.send(json.dumps(["1", "2", topic, "phx_leave", {}]))
                counts["leaves"] += 1
                await ws.close()
        except Exception as exc:  # a node restarting (refused, reset, timed out): go on
            counts[f"failed ({type(exc).__name__})"] += 1


async def _run(cluster: LocalCluster, minutes: float, report: SoakReport, say) -> None:
    urls = cluster.ws_urls
    topics = [f"topics:soak{i}" for i in range(TOPICS)]
    stop = asyncio.Event()
    stayers = [Stayer(urls[1], t) for t in topics for _ in range(STAYERS_PER_TOPIC)]
    readies = [asyncio.Event() for _ in stayers]
    stayer_tasks = [asyncio.ensure_future(s.run(r, stop)) for s, r in zip(stayers, readies, strict=True)]
    await _all_joined(stayer_tasks, readies, timeout=60)
    publisher = Publisher(urls[1], topics)
    publishing = asyncio.ensure_future(publisher.run(stop))
    churning = asyncio.ensure_future(churn(urls, topics, stop, report.churn))
    seconds = minutes * 60
    for fraction, node in ((1 / 3, "ts-a"), (2 / 3, "ws-a")):
        await asyncio.sleep(max(0.0, seconds * fraction - (time.time() - report.started)))
        pid = cluster.pid_of(node)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            report.faults.append(f"SIGKILL {node} at {time.time() - report.started:.0f}s")
            say(report.faults[-1])
    await asyncio.sleep(max(0.0, seconds - (time.time() - report.started)))
    stop.set()
    await asyncio.gather(publishing, churning, return_exceptions=True)
    await asyncio.sleep(2)  # deliveries of the last publishes
    for task in stayer_tasks:
        task.cancel()
    await asyncio.gather(*stayer_tasks, return_exceptions=True)
    report.published_ok = sum(len(v) for v in publisher.ok.values())
    report.publish_errors = publisher.errors
    report.stayers_dropped = sum(s.dropped for s in stayers)
    for stayer in stayers:
        if stayer.dropped:
            continue
        expected = [seq for seq, at in publisher.ok[stayer.topic] if at > stayer.joined_at]
        got = Counter(stayer.received)
        report.expected += len(expected)
        report.lost += sum(1 for seq in expected if seq not in got)
        report.duplicated += sum(n - 1 for n in got.values() if n > 1)
        report.out_of_order += sum(1 for a, b in itertools.pairwise(stayer.received) if b <= a)


async def _all_joined(tasks: list[asyncio.Future], readies: list[asyncio.Event],
                      timeout: float) -> None:
    """Return once every stayer has joined; a stayer that failed first fails the soak with
    its own error, not a timeout."""
    waits = [asyncio.ensure_future(r.wait()) for r in readies]
    try:
        async with asyncio.timeout(timeout):
            for task, joined in zip(tasks, waits, strict=True):
                await asyncio.wait([task, joined], return_when=asyncio.FIRST_COMPLETED)
                if not joined.done():
                    why = task.exception() or "the server closed it"
                    raise RuntimeError(f"a stayer ended before it joined: {why!r}")
    finally:
        for wait in waits:
            wait.cancel()


def soak(minutes: float, say=print) -> SoakReport:
    """Run the soak for ``minutes`` and return its report (``say`` gets progress lines)."""
    report = SoakReport(minutes)
    policy = RestartPolicy(first_delay=0.5, max_delay=5.0, stable_after=20.0)
    cluster = LocalCluster(ws=2, ts=2, port=free_port_block(2), migrate=False,
                           supervise=True, restart_policy=policy,
                           emit=lambda line: say(line) if _worth_showing(line) else None,
                           base_env={**os.environ, "DPS_ALLOW_ANONYMOUS": "1"})
    with cluster:
        for name, pid in _pids(cluster).items():
            report.rss_kib[name] = {"start": rss_kib(pid)}
        report.started = time.time()
        asyncio.run(_run(cluster, minutes, report, say))
        for name, pid in _pids(cluster).items():
            report.rss_kib[name]["end"] = rss_kib(pid)
    return report


def _worth_showing(line: str) -> bool:
    """Supervision's own lines, and a node's errors (a node that fails to start says why)."""
    return line.startswith("[runcluster]") or any(
        word in line for word in ("Error", "ERROR", "Traceback", "CRITICAL"))


def _pids(cluster: LocalCluster) -> dict[str, int | None]:
    """Every process of the cluster now: the nodes, then their Redis servers."""
    pids = {n.name: cluster.pid_of(n.name) for n in cluster.nodes}
    pids.update({f"redis for {n.name}": cluster.redis_pid(n.name) for n in cluster.nodes})
    return pids
