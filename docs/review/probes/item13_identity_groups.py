"""Issue 20 item 13: identity groups of non-numeric ids. A connect hook names the socket's
identity from ?who=; `topics.api.disconnect(Identity("a_b"))` is sent from a shell beside the
cluster; is the socket of `a@b` (and of an id sharing the first 80 characters) closed too?"""
import asyncio
import tempfile
from pathlib import Path

from _probe import Cluster, emit, run

HOOK = '''
try:
    from topics.hooks.identity import Identity
except ImportError:
    from topics.identity import Identity

async def connect(params, scope):
    return Identity(params["who"])
'''
LONG = "x" * 80
PAIRS = [("a_b", "a@b"), (LONG + "1", LONG + "2")]

hook_dir = Path(tempfile.mkdtemp(prefix="dps-probe-hook-"))
(hook_dir / "probe_identity_hook.py").write_text(HOOK)


async def open_socket(url: str):
    from websockets.asyncio.client import connect
    return await connect(url, open_timeout=10)


async def closed_within(ws, seconds: float) -> bool:
    try:
        await asyncio.wait_for(ws.wait_closed(), seconds)
        return True
    except TimeoutError:
        return False


async def probe(cluster: Cluster) -> dict:
    figures = {}
    for target, other in PAIRS:
        sockets = {who: await open_socket(f"{cluster.ws_urls[0]}?vsn=2.0.0&who={who}")
                   for who in (target, other)}
        groups = cluster.shell(
            "try:\n from topics.hooks.identity import Identity\nexcept ImportError:\n"
            " from topics.identity import Identity\n"
            f"print('GROUP', Identity({target!r}).group); print('GROUP', Identity({other!r}).group)")
        groups = [line for line in groups.splitlines() if line.startswith("GROUP ")]
        cluster.shell(
            "try:\n from topics.hooks.identity import Identity\nexcept ImportError:\n"
            " from topics.identity import Identity\nfrom topics.api import disconnect\n"
            f"disconnect(Identity({target!r}))")
        key = "80char_prefix" if target.startswith(LONG) else f"{target}_vs_{other}"
        figures[key] = {"same_group": groups[0] == groups[1],
                        "target_closed": await closed_within(sockets[target], 5),
                        "other_closed": await closed_within(sockets[other], 2)}
        for ws in sockets.values():
            await ws.close()
    return figures


with Cluster(env={"PYTHONPATH": str(hook_dir), "DPS_CONNECT": "probe_identity_hook.connect"},
             ws=1, ts=1) as cluster:
    emit(run(probe(cluster)))
