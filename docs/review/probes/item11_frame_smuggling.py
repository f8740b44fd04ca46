"""Issue 20 item 11, under uvicorn and daphne (runcluster): a binary frame header with a zero
mask, a 0.3 s pause, then a masked heartbeat (ref SMUGGLED) as that frame's payload, then a
heartbeat (ref AFTER) and a ping; and an honest heartbeat split at every byte (a pause between
the parts), and a 16-bit-length one split right after its header and mask."""
import sys
import time

from _probe import Cluster, RawSocket, client_frame, emit, heartbeat


def smuggling(url: str) -> dict:
    inner = heartbeat("SMUGGLED")
    raw = RawSocket(url)
    raw.send(bytes([0x82, 0x80 | len(inner)]) + b"\0\0\0\0")
    time.sleep(0.3)
    raw.send(inner)
    events = raw.events(0.3)
    try:
        raw.send(heartbeat("AFTER") + client_frame(0x9, b"ping!"))
    except OSError as exc:  # the node closed after the outer frame
        events.append(("send failed", type(exc).__name__))
    events += raw.events(4)
    raw.close()
    refs = [e[1][1] for e in events if e[0] == "text" and isinstance(e[1], list)]
    return {"smuggled_answered": "SMUGGLED" in refs, "after_answered": "AFTER" in refs,
            "pong": any(e[0] == "pong" for e in events),
            "end": next(([str(x) for x in e] for e in events
                        if e[0] in ("close", "eof", "reset", "send failed")), None),
            "texts": [e[1] for e in events if e[0] == "text"][:4]}


def splits(url: str) -> dict:
    raw = RawSocket(url)
    cases = []
    small = heartbeat("S")
    cases += [(f"s{k}", small, k) for k in range(1, len(small))]
    big = heartbeat("B", padding=200)  # 16-bit length: header 4 bytes + mask 4
    cases += [("b8", big, 8), ("b4", big, 4), ("b2", big, 2)]
    answered = wrong = 0
    failed = []
    for name, frame, k in cases:
        ref = name
        frame = heartbeat(ref, padding=200 if name.startswith("b") else 0)
        raw.send(frame[:k])
        time.sleep(0.05)
        raw.send(frame[k:])
        events = raw.events(3, until=lambda e: e[0] == "text" or e[0] != "pong")
        got = [e for e in events if e[0] == "text"]
        if got and got[0][1][1] == ref:
            answered += 1
        else:
            wrong += 1
            failed.append([name, [list(map(str, e))[:3] for e in events][:2]])
            if any(e[0] in ("close", "eof", "reset") for e in events):
                raw.close()
                raw = RawSocket(url)
    raw.close()
    return {"split_cases": len(cases), "answered": answered, "not_answered": wrong,
            "first_failures": failed[:3]}


servers = sys.argv[1:] or ["uvicorn", "daphne"]
figures = {}
for server in servers:
    with Cluster(server=server, ws=1, ts=1) as cluster:
        url = cluster.ws_urls[0] + "?vsn=2.0.0"
        figures[server] = {"smuggling": smuggling(url), "splits": splits(url)}
emit(figures)
