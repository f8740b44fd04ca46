"""Issue 20 item 12, under daphne and uvicorn (runcluster): what comes back for an invalid close
frame (codes 999, 1005, 5000; a 1-byte payload; a reason that is not UTF-8), beside a valid
close (1000)."""
import sys

from _probe import Cluster, RawSocket, client_frame, emit

CASES = {"1000_valid": (1000).to_bytes(2, "big") + b"bye", "999": (999).to_bytes(2, "big"),
         "1005": (1005).to_bytes(2, "big"), "5000": (5000).to_bytes(2, "big"),
         "1_byte": b"\x03", "non_utf8_reason": (1000).to_bytes(2, "big") + b"\xff\xfe"}


def answer(url: str, payload: bytes) -> str:
    raw = RawSocket(url)
    raw.send(client_frame(0x8, payload))
    events = raw.events(5)
    raw.close()
    end = next((e for e in events if e[0] in ("close", "eof", "reset")), ("nothing in 5 s",))
    if end[0] == "close":
        return f"close {end[1]}"
    return end[0] if end[0] != "eof" else "EOF without close frame"


servers = sys.argv[1:] or ["daphne", "uvicorn"]
figures = {}
for server in servers:
    with Cluster(server=server, ws=1, ts=1) as cluster:
        url = cluster.ws_urls[0] + "?vsn=2.0.0"
        figures[server] = {name: answer(url, payload) for name, payload in CASES.items()}
emit(figures)
