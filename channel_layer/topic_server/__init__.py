"""The topic server: owner of the groups the ring gives it.

For every group it owns it knows which WS nodes hold members and how many, and turns each
publish into **one** delivery per such WS node, never one per member. It also holds the
presence and history of the groups it owns. Its parts:

- :mod:`.server`: the run (inbox batches, writes, housekeeping) composing the others;
- :mod:`.registry`: the groups and WS nodes it knows, and their rules (pure);
- :mod:`.owner`: the envelopes, one by one: fan-out, joins, snapshots, presence, queries;
- :mod:`.hold`: the hold gate (publishes wait while WS nodes re-register);
- :mod:`.lease`: its lease and the pause detector;
- :mod:`.ring_moves`: ring changes and draining after removal;
- :mod:`.stats_publisher`: its stats and topic table, and its Redis clients.

The ring follower and the outboxes are shared with the node runtime
(``channel_layer.ring_follower``, ``channel_layer.peers``).
"""
from channel_layer.topic_server.registry import GroupState, WsNodeState
from channel_layer.topic_server.server import TopicServer

__all__ = ["GroupState", "TopicServer", "WsNodeState"]
