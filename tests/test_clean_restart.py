"""A WS node restarted under the same name starts clean: its new members get nothing that was
published before the new process booted, though the old one's backlog is full of it."""
from __future__ import annotations

import asyncio
import json
import os
import signal

import pytest

from channel_layer.cluster import load_cluster
from channel_layer.layer import DPSChannelLayer
from tests.support.processes import Worker, start_topic_server, stop_all, write_cluster_file
from tests.test_node_failures import wait_for, xlen

pytestmark = pytest.mark.e2e


async def _in_thread(function, *args):
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)


def test_a_restarted_ws_node_delivers_nothing_from_its_previous_life(tmp_path, redis_factory):
    urls = {n: redis_factory().url for n in ("ws-a", "ts-a")}
    cluster_file = write_cluster_file(tmp_path, urls)
    server = start_topic_server(cluster_file, "ts-a")
    # A small read batch makes the new process take any backlog slowly, so a backlog it did
    # not discard would still be arriving when its member has joined.
    slow_reader = json.dumps({"read_batch": 16})
    first = Worker(cluster_file, "ws-a", "--groups", "room", "--expect", "1000000",
                   "--timeout", "60")
    second = None
    acked: list[int] = []

    async def scenario() -> dict:
        nonlocal second
        layer = DPSChannelLayer(cluster=load_cluster(env={"DPS_CLUSTER": str(cluster_file)}))
        stop = asyncio.Event()

        async def publish_forever() -> None:
            seq = 0
            while not stop.is_set():
                await layer.group_send("room", {"type": "test.message", "group": "room",
                                                "publisher": "client", "seq": seq})
                acked.append(seq)
                seq += 1
                await asyncio.sleep(0.001)  # pacing, ~500/s: traffic keeps flowing

        publisher = asyncio.ensure_future(publish_forever())
        try:
            await _in_thread(first.read_event, "ready")
            first.go()
            await _in_thread(wait_for, lambda: len(acked) > 100)
            os.kill(first.proc.pid, signal.SIGKILL)
            first.proc.wait(5)
            # The owner still counts ws-a as a member (node_timeout has not passed), so its
            # deliveries pile up in ws-a's backlog.
            await _in_thread(wait_for, lambda: xlen(urls["ws-a"], "ws-a") >= 1000, 20)
            booted_after = acked[-1]
            second = Worker(cluster_file, "ws-a", "--groups", "room", "--expect", "200",
                            DPS_LAYER=slow_reader)
            await _in_thread(second.read_event, "ready")
            second.go()
            return await _in_thread(second.read_event, "done", 40) | {"after": booted_after}
        finally:
            stop.set()
            await publisher
            await layer.close()

    try:
        done = asyncio.run(scenario())
    finally:
        first.stop()
        if second is not None:
            second.stop()
        stop_all([server])
    assert done["complete"], done
    [seqs] = [[seq for _, seq in per_group["room"]] for per_group in done["received"].values()]
    stale = [seq for seq in seqs if seq <= done["after"]]
    assert stale == [], f"{len(stale)} message(s) from before the restart: {stale[:10]}"
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # from its join: in order, each once, no gap
