"""Who joins what and who publishes where: the benchmark's load shapes, as pure layouts.

A :class:`Layout` is, per load generator (one per real WS node), how many sockets it opens,
its joins ``[socket, topic]`` and its publishers ``[socket, topic, pub_id]`` (pub_ids are
unique across generators; the generator numbers each publisher's messages 1, 2, 3, ...).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    sockets: list[int]
    joins: list[list[list]]
    publishers: list[list[list]]

    @property
    def members(self) -> int:
        return sum(len(j) for j in self.joins)

    def deliveries_per_publish(self) -> float:
        """Members per published topic, averaged over the publishers (every member, the
        publisher included, gets each message once)."""
        members: dict[str, int] = {}
        for joins in self.joins:
            for _sock, topic in joins:
                members[topic] = members.get(topic, 0) + 1
        topics = [topic for pubs in self.publishers for _sock, topic, _pub in pubs]
        return sum(members[t] for t in topics) / len(topics)


def rooms(topics: int, per_socket: int, nodes: int) -> Layout:
    """Small rooms: each topic has one member on each WS node (two on a single node), and its
    publisher is one of them, on the nodes alternately. A socket joins ``per_socket`` topics
    (1: a socket per member), and every socket that holds a topic's publisher publishes."""
    sockets_needed = (topics + per_socket - 1) // per_socket
    copies = max(1, 2 // nodes)
    joins: list[list] = [[] for _ in range(nodes)]
    pubs: list[list] = [[] for _ in range(nodes)]
    for t in range(topics):
        name = f"topics:mt{t}"
        for copy in range(copies):
            for i in range(nodes):
                joins[i].append([copy * sockets_needed + t // per_socket, name])
        pubs[t % nodes].append([t // per_socket, name, t + 1])
    return Layout([sockets_needed * copies] * nodes, joins, pubs)


def fanout(members: int, nodes: int, publishers_per_node: int = 2,
           topic: str = "topics:fanout") -> Layout:
    """One topic, ``members`` sockets spread evenly over the WS nodes, the first
    ``publishers_per_node`` sockets of each node publishing."""
    sockets = [members // nodes + (1 if i < members % nodes else 0) for i in range(nodes)]
    joins = [[[s, topic] for s in range(k)] for k in sockets]
    pubs = [[[j, topic, i * 1000 + j] for j in range(min(publishers_per_node, k))]
            for i, k in enumerate(sockets)]
    return Layout(sockets, joins, pubs)
