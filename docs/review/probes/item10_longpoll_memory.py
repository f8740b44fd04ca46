"""Issue 20 item 10: VmHWM of a WS node (runcluster, daphne) before and after one POST at the
default 4 MiB body limit into an anonymous long-poll session: a body of newlines, and one of
tiny frames (`[]\\n`); a fresh cluster for each body, since VmHWM is a peak."""
import json
import time

from _probe import Cluster, emit, http, peak_rss_mib, ws_node_pid

BODY = 4 * 1024 * 1024
SHAPES = {"newlines": b"\n" * BODY, "tiny_frames": b"[]\n" * (BODY // 3)}
figures = {}
for shape, body in SHAPES.items():
    with Cluster(ws=1, ts=1) as cluster:
        base = cluster.http[0]
        pid = ws_node_pid(cluster.port)
        status, answer, _ = http("GET", f"{base}/socket/longpoll?vsn=2.0.0")
        token = json.loads(answer)["token"]
        before = peak_rss_mib(pid)
        started = time.monotonic()
        status, answer, _ = http("POST", f"{base}/socket/longpoll?vsn=2.0.0&token={token}", body,
                                 {"Content-Type": "application/x-ndjson"}, timeout=110)
        seconds = round(time.monotonic() - started, 2)
        after = peak_rss_mib(pid)
        figures[shape] = {"vmhwm_before_mib": before, "vmhwm_after_mib": after,
                          "delta_mib": after - before, "seconds": seconds, "http": status,
                          "answer": answer[:60].decode(errors="replace")}
emit(figures)
