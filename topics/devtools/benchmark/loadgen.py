"""The load generator: one OS process, driven over stdin/stdout by the benchmark command.

Run as ``python -m topics.devtools.benchmark.loadgen``. Each command is one JSON line on stdin and gets
one JSON line on stdout (``{"ok": true, ...}`` or ``{"ok": false, "error": ...}``):

- ``{"cmd": "open", "url": U, "sockets": N}``: open N WebSockets (Phoenix v2 JSON) to U.
- ``{"cmd": "join", "joins": [[sock, topic], ...]}``: send every join at once (pipelined on
  each socket) and wait for all replies; reports joins/s and join-reply latency.
- ``{"cmd": "publish", "rate": R, "duration": D, "publishers": [[sock, topic, pub_id], ...]}``:
  publish at R msg/s in total, round-robin over the publishers, each payload carrying
  ``{"p": pub_id, "s": seq, "t": time.time()}``; reports the last seq of every publisher.
- ``{"cmd": "collect", "expected": {topic: {pub_id: last_seq}}, "previous": {...}, "timeout": T}``:
  (``previous``: the last seqs before the step) wait until
  every member held here has seen every expected message (or T s), then report deliveries,
  loss, duplicates, per-publisher reordering, per-topic order hashes and latency; the step's
  counters start again from zero.
- ``{"cmd": "close"}``.

A member is one (socket, topic) join. Sockets are ``wsclient`` connections handing over each
text message undecoded. A broadcast of the benchmark's event is read by one regular expression
over its bytes (topic, publisher, sequence number, send time), not ``json.loads`` into objects,
and so is a publish's ``ok`` reply: the generator's CPU per delivery decides how much load it
can offer from its one core before it, not the server, is the limit. Any other frame (join
replies, errors, presence pushes) is decoded in full. Frames due on one socket in one tick go
out in one write.
"""
from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections.abc import Callable

from topics.devtools.benchmark.wsclient import HandshakeError, RawWebSocket, connect

BENCH_EVENT = "bench"
# phoenix.js's default; the server closes sockets silent for 60 s. Each socket beats on its own
# phase (one slice of the sockets per second), as clients that connected at different times do.
HEARTBEAT_INTERVAL = 30.0
HEARTBEAT_TICK = 1.0
CONNECT_ATTEMPTS = 3
_HASH_MASK = (1 << 61) - 1
# A broadcast of BENCH_EVENT as DPS writes it (no spaces) or Channels' ``send_json`` does
# (", " and ": "): [join_ref, null, topic, "bench", {"p": pub, "s": seq, "t": sent}].
_BENCH_FRAME = re.compile(
    rb'\[[^,]*, ?null, ?"([^"]*)", ?"bench", ?\{"p": ?(\d+), ?"s": ?(\d+), ?"t": ?([-+.\deE]+)\}\]$')
# An ``ok`` reply without a response: [join_ref, ref, topic, "phx_reply", {"status": "ok", ...}].
_OK_REPLY = re.compile(
    rb'\[[^,]*, ?"(\d+)", ?"([^"]*)", ?"phx_reply", ?\{"status": ?"ok", ?"response": ?\{\}\}\]$')
LATENCY_BUCKET_S = 1e-4  # histograms in 0.1 ms buckets (they merge across generators)


def phoenix_js_json(value: object) -> str:
    """A frame as phoenix.js writes it (``JSON.stringify``: no spaces), so that servers see
    what real clients send, heartbeats included."""
    return json.dumps(value, separators=(",", ":"))


class Member:
    __slots__ = ("last", "seen", "dups", "reorders", "order_hash", "count")

    def __init__(self) -> None:
        self.last: dict[int, int] = {}
        self.seen: set[int] = set()
        self.dups = 0
        self.reorders = 0
        self.order_hash = 0
        self.count = 0


class Generator:
    def __init__(self) -> None:
        self.sockets: list[RawWebSocket | None] = []  # None while connecting
        self.members: dict[tuple[int, str], Member] = {}
        # The same members by socket, then by the topic's bytes (what the receive path has).
        self.members_by_socket: dict[int, dict[bytes, Member]] = {}
        self.pending_joins: dict[str, float] = {}  # ref -> send time
        self.join_refs: dict[tuple[int, str], str] = {}
        self.join_latencies: list[float] = []
        self.join_errors: list[str] = []
        self.joins_left = 0
        self.joins_done: asyncio.Event | None = None
        self.pub_ok = 0
        self.pub_err = 0
        self.pub_err_samples: list[str] = []
        self.refs = 0
        self._reset_step()
        self.heartbeat_task: asyncio.Task | None = None
        self.closed_sockets = 0
        self.pushes: dict[str, int] = {}  # other server pushes received, by event

    async def counts(self) -> dict:
        """The server pushes other than broadcasts and replies received so far, by event."""
        return {"pushes": dict(self.pushes)}

    def _reset_step(self) -> None:
        self.hist: dict[int, int] = {}
        self.lat_max = 0.0
        self.deliveries = 0
        self.first_rx = 0.0
        self.last_rx = 0.0
        for member in self.members.values():
            member.seen = set()
            member.dups = member.reorders = member.count = 0

    def next_ref(self) -> str:
        self.refs += 1
        return str(self.refs)

    # ------------------------------------------------------------------------ receiving
    def _receiver(self, index: int) -> Callable[[bytes], None]:
        """The callback for socket ``index``: called for every text message (its bytes), in
        order."""
        mine = self.members_by_socket.setdefault(index, {})
        bench_frame = _BENCH_FRAME.match
        ok_reply = _OK_REPLY.match
        pending_joins = self.pending_joins
        bucket_s = LATENCY_BUCKET_S

        def delivered(topic: bytes, pub: int, seq: int, sent: float, now: float) -> None:
            member = mine.get(topic)
            if member is None:
                return
            lat = now - sent
            hist = self.hist
            bucket = int(lat / bucket_s)
            hist[bucket] = hist.get(bucket, 0) + 1
            if lat > self.lat_max:
                self.lat_max = lat
            if not self.deliveries:
                self.first_rx = now
            self.deliveries += 1
            self.last_rx = now
            key = (pub << 32) | seq
            if key in member.seen:
                member.dups += 1
                return
            member.seen.add(key)
            member.count += 1
            if seq <= member.last.get(pub, 0):
                member.reorders += 1
            else:
                member.last[pub] = seq
            member.order_hash = (member.order_hash * 1000003 + key) & _HASH_MASK

        def on_text(data: bytes) -> None:
            now = time.time()
            found = bench_frame(data)
            if found is not None:
                topic, pub, seq, sent = found.groups()
                delivered(topic, int(pub), int(seq), float(sent), now)
                return
            found = ok_reply(data)
            if found is not None and found[2] != b"phoenix" \
                    and found[1].decode() not in pending_joins:
                self.pub_ok += 1
                return
            frame = json.loads(data)
            event = frame[3]
            if event == BENCH_EVENT:  # written some other way (spacing, key order)
                payload = frame[4]
                delivered(frame[2].encode(), payload["p"], payload["s"], payload["t"], now)
            elif event == "phx_reply":
                self._on_reply(frame, now)
            else:  # presence_state, presence_diff, phx_close: counted (benchmark_presence)
                self.pushes[event] = self.pushes.get(event, 0) + 1

        return on_text

    def _on_reply(self, frame: list, now: float) -> None:
        ref = frame[1]
        sent = self.pending_joins.pop(ref, None)
        status = frame[4].get("status")
        if sent is not None:
            self.join_latencies.append(now - sent)
            if status != "ok":
                self.join_errors.append(json.dumps(frame[4])[:200])
            self.joins_left -= 1
            if self.joins_left <= 0 and self.joins_done is not None:
                self.joins_done.set()
        elif frame[2] == "phoenix":
            pass  # a heartbeat's reply
        elif status == "ok":
            self.pub_ok += 1
        else:
            self.pub_err += 1
            if len(self.pub_err_samples) < 5:
                self.pub_err_samples.append(json.dumps(frame[4])[:200])

    def _closed(self, _future: asyncio.Future) -> None:
        self.closed_sockets += 1

    # ------------------------------------------------------------------------- commands
    async def open(self, url: str, sockets: int, concurrency: int = 50) -> dict:
        limit = asyncio.Semaphore(concurrency)
        started = time.monotonic()

        base = len(self.sockets)

        reconnects = 0

        async def one(index: int) -> RawWebSocket:
            nonlocal reconnects
            async with limit:
                for attempt in range(CONNECT_ATTEMPTS):
                    try:
                        ws = await connect(url, self._receiver(index), text_as_bytes=True)
                        break
                    except (HandshakeError, ConnectionResetError, TimeoutError):
                        # daphne refuses a handshake its application has not accepted within
                        # 5 s, or a full accept queue resets it (a connect storm on a busy
                        # machine): counted, then tried again.
                        reconnects += 1
                        if attempt == CONNECT_ATTEMPTS - 1:
                            raise
                ws.closed.add_done_callback(self._closed)
                self.sockets[index] = ws  # beating from now on: a long open outlasts 60 s
                return ws

        self.sockets.extend([None] * sockets)
        if self.heartbeat_task is None:
            self.heartbeat_task = asyncio.create_task(self._heartbeats())
        await asyncio.gather(*(one(base + i) for i in range(sockets)))
        # A handshake the server answered just as its own connect timeout fired is dropped
        # right after it (daphne, in a connect storm): connect those again, counted.
        for _ in range(CONNECT_ATTEMPTS):
            lost = [i for i in range(base, base + sockets) if self.sockets[i].transport is None
                    or self.sockets[i].transport.is_closing()]
            if not lost:
                break
            reconnects += len(lost)
            await asyncio.gather(*(one(i) for i in lost))
        return {"sockets": len(self.sockets), "seconds": time.monotonic() - started,
                "reconnects": reconnects}

    async def _heartbeats(self) -> None:
        slots = int(HEARTBEAT_INTERVAL / HEARTBEAT_TICK)
        slot = 0
        while True:
            await asyncio.sleep(HEARTBEAT_TICK)
            for ws in self.sockets[slot::slots]:
                if ws is None:
                    continue  # still connecting
                try:
                    ws.send_text(phoenix_js_json([None, self.next_ref(), "phoenix", "heartbeat",
                                                  {}]))
                except ConnectionError:
                    pass
            slot = (slot + 1) % slots

    async def join(self, joins: list[list], timeout: float = 120.0) -> dict:
        self.join_latencies = []
        self.join_errors = []
        self.joins_left = len(joins)
        self.joins_done = asyncio.Event()
        for sock, topic in joins:
            member = self.members[(sock, topic)] = Member()
            self.members_by_socket.setdefault(sock, {})[topic.encode()] = member
        by_socket: dict[int, list[str]] = {}
        started = time.time()
        for sock, topic in joins:
            ref = self.next_ref()
            self.join_refs[(sock, topic)] = ref
            by_socket.setdefault(sock, []).append(
                phoenix_js_json([ref, ref, topic, "phx_join", {}]))
            self.pending_joins[ref] = started

        for sock, frames in by_socket.items():
            ws = self.sockets[sock]
            for frame in frames:
                ws.send_text(frame)
        try:
            if joins:
                await asyncio.wait_for(self.joins_done.wait(), timeout)
        except TimeoutError:
            pass
        elapsed = time.time() - started
        lats = sorted(self.join_latencies)
        return {"joins": len(joins), "replies": len(lats), "errors": len(self.join_errors),
                "error_samples": self.join_errors[:5], "seconds": elapsed,
                "latencies": _percentiles(lats), "timed_out": self.joins_left > 0}

    async def publish(self, rate: float, duration: float, publishers: list[list]) -> dict:
        seqs: dict[int, int] = getattr(self, "seqs", {})
        self.seqs = seqs
        sockets = self.sockets
        # Each publisher's frame as JSON.stringify writes it, around its ref, seq and clock.
        templates = [(sock, pub, f'[{phoenix_js_json(self.join_refs[(sock, topic)])},"{{}}",'
                      f'{phoenix_js_json(topic)},"publish",["{BENCH_EVENT}",{{{{"p":{pub},'
                      f'"s":{{}},"t":{{!r}}}}}}]]') for sock, topic, pub in publishers]
        n = len(templates)
        sent = 0
        started = time.monotonic()
        end = started + duration
        tick = 0.002
        pub_ok0, pub_err0 = self.pub_ok, self.pub_err
        while True:
            now = time.monotonic()
            if now >= end:
                break
            due = int((now - started) * rate) + 1 - sent
            batches: dict[int, list[str]] = {}
            for _ in range(due):
                sock, pub, template = templates[sent % n]
                seq = seqs.get(pub, 0) + 1
                seqs[pub] = seq
                batches.setdefault(sock, []).append(
                    template.format(self.next_ref(), seq, time.time()))
                sent += 1
            for sock, frames in batches.items():
                sockets[sock].send_texts(frames)
            await asyncio.sleep(tick)
        elapsed = time.monotonic() - started
        expected: dict[str, dict[str, int]] = {}
        for _sock, topic, pub in publishers:
            if pub in seqs:
                expected.setdefault(topic, {})[str(pub)] = seqs[pub]
        return {"sent": sent, "seconds": elapsed, "expected": expected,
                "pub_ok_before": pub_ok0, "pub_err_before": pub_err0}

    async def collect(self, expected: dict[str, dict[str, int]],
                      previous: dict[str, dict[str, int]], timeout: float) -> dict:
        """``expected``/``previous``: each publisher's last seq after/before this step."""
        want: dict[str, int] = {}
        for topic, pubs in expected.items():
            before = previous.get(topic, {})
            want[topic] = sum(last - before.get(pub, 0) for pub, last in pubs.items())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(m.count >= want.get(topic, 0) for (_s, topic), m in self.members.items()):
                break
            await asyncio.sleep(0.05)
        lost = dups = reorders = incomplete = 0
        hashes: dict[str, dict[str, int]] = {}
        for (_sock, topic), member in self.members.items():
            missing = want.get(topic, 0) - member.count
            if missing > 0:
                lost += missing
                incomplete += 1
            dups += member.dups
            reorders += member.reorders
            if topic in want and missing <= 0:
                per = hashes.setdefault(topic, {})
                per[str(member.order_hash)] = per.get(str(member.order_hash), 0) + 1
        result = {
            "deliveries": self.deliveries, "expected_deliveries": sum(
                want.get(topic, 0) for (_s, topic) in self.members),
            "lost": lost, "dups": dups, "reorders": reorders, "incomplete_members": incomplete,
            "hashes": hashes, "hist": {str(k): v for k, v in self.hist.items()},
            "lat_max": self.lat_max, "first_rx": self.first_rx, "last_rx": self.last_rx,
            "pub_ok": self.pub_ok, "pub_err": self.pub_err,
            "pub_err_samples": self.pub_err_samples[:5], "closed_sockets": self.closed_sockets,
        }
        self._reset_step()
        for member in self.members.values():
            member.order_hash = 0
        return result

    async def close(self) -> None:
        if self.heartbeat_task is not None:
            self.heartbeat_task.cancel()
        await asyncio.gather(*(ws.close() for ws in self.sockets if ws is not None),
                             return_exceptions=True)


def _percentiles(sorted_values: list[float]) -> dict[str, float | None]:
    if not sorted_values:
        return {"p50": None, "p99": None, "max": None}

    def pick(q: float) -> float:
        return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]

    return {"p50": pick(0.5), "p99": pick(0.99), "max": sorted_values[-1]}


async def main() -> None:
    gen = Generator()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 26)  # a join command lists thousands of joins
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            break
        command = json.loads(line)
        cmd = command.pop("cmd")
        try:
            if cmd == "close":
                await gen.close()
                reply: dict = {}
            else:
                reply = await getattr(gen, cmd)(**command)
            reply["ok"] = True
        except Exception as exc:  # reported to the orchestrator, which stops the run
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
        if cmd == "close":
            break


if __name__ == "__main__":
    asyncio.run(main())
