"""The topics pages' data: one sorted page of every topic in the cluster, and one topic.

Each topic server keeps its topic table in its own Redis (:mod:`channel_layer.stats`): sorted
sets by members, by rate and by last activity, and a row per group. A page asks each topic
server (in parallel, each with the admin's Redis timeout) for its first ``offset + per_page``
groups in the chosen order, merges them and reads the rows of the page only: the cost follows
the page, not the number of topics. A name search scans the sorted set with ``MATCH`` and reads
at most ``DPS_ADMIN_SEARCH_LIMIT`` matches per topic server. A topic server that does not
answer is named in ``errors``; the page shows the others.
"""
from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import RedisError

from channel_layer import stats
from channel_layer.cluster import Node
from channel_layer.ring import Ring
from topics.operator.cluster_stats import Source, on_runtime_thread, owner_lookup, safe_error, topic_of

PAGE_SIZE = 100
SEARCH_LIMIT = 10_000
ORDERS = ("members", "rate", "last")


@dataclass(frozen=True)
class TopicQuery:
    search: str = ""
    order: str = "members"
    descending: bool = True
    page: int = 1
    per_page: int = PAGE_SIZE

    @classmethod
    def from_params(cls, params: Any, per_page: int = PAGE_SIZE) -> TopicQuery:
        """From the page's GET parameters: ``q``, ``o`` (``members``, ``-rate`` ...; a leading
        ``-`` sorts ascending, as the admin's change list), ``p``; bad values fall back."""
        order = str(params.get("o", "members"))
        ascending = order.startswith("-")
        order = order.lstrip("-")
        try:
            page = max(1, int(params.get("p", 1)))
        except ValueError:
            page = 1
        return cls(str(params.get("q", "")).strip()[:100], order if order in ORDERS else
                   "members", not ascending, page, max(1, min(per_page, 1000)))

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page


@dataclass
class _Answer:
    owner: str
    total: int = 0
    pairs: list[tuple[str, float]] | None = None
    truncated: bool = False
    error: str | None = None
    client: redis.Redis | None = None            # a topic server's Redis, to read rows from
    rows: dict[str, stats.TopicRow] | None = None  # or the rows already at hand (embedded)


def _row(entry: stats.TopicRow, owner: str, now: float) -> dict[str, Any]:
    return {"topic": topic_of(entry.group), "group": entry.group, "owner": owner,
            "members": dict(sorted(entry.members.items())), "total_members": entry.total_members,
            "rate": entry.rate, "messages": entry.messages, "created": entry.created,
            "last_activity": entry.last_activity, "idle": max(0.0, now - entry.last_activity),
            "bucket": entry.bucket, "history": entry.history}


def _sort_key(query: TopicQuery) -> Callable[[tuple[str, float, str]], tuple]:
    sign = -1 if query.descending else 1
    return lambda item: (sign * item[1], item[0])


def _client(node: Node, timeout: float) -> redis.Redis:
    return redis.Redis.from_url(node.redis_url, socket_connect_timeout=timeout,
                                socket_timeout=timeout)


def _ask(node: Node, source: Source, query: TopicQuery, timeout: float,
         search_limit: int) -> _Answer:
    answer = _Answer(node.name, client=_client(node, timeout))
    keys = stats.TopicKeys.of(source.prefix, node.name)
    try:
        if query.search:
            answer.pairs, answer.truncated = stats.read_matching(
                answer.client, keys, query.order, query.search, search_limit)
            answer.total = len(answer.pairs)
        else:
            answer.total, answer.pairs = stats.read_top(
                answer.client, keys, query.order, query.descending, query.offset + query.per_page)
    except (RedisError, OSError) as exc:
        answer.error = safe_error(exc, node.redis_url)
    return answer


def _in_memory(source: Source, query: TopicQuery) -> list[_Answer]:
    """The embedded cluster: its in-process topic server's groups, scored in Python."""
    layer = source.layer
    server = layer.runtime.topic_server if layer is not None else None
    if server is None:
        return []
    rows = on_runtime_thread(layer.runtime, lambda: list(
        stats.rows_in_memory(server.topic_table, server.groups))) or []
    score = {"members": lambda r: r.total_members, "rate": lambda r: r.rate,
             "last": lambda r: r.last_activity}[query.order]
    needle = query.search.lower()
    chosen = [r for r in rows if needle in r.group.lower()]
    return [_Answer(server.node, total=len(chosen), pairs=[(r.group, score(r)) for r in chosen],
                    rows={r.group: r for r in chosen})]


def topic_page(source: Source, query: TopicQuery, timeout: float,
               search_limit: int = SEARCH_LIMIT) -> dict[str, Any]:
    """One page of topics in ``query``'s order, with the figures of every row."""
    now = time.time()
    ts_nodes = source.cluster.ts_nodes
    if source.cluster.embedded:
        answers = _in_memory(source, query)
    else:
        with ThreadPoolExecutor(max_workers=min(8, len(ts_nodes))) as pool:
            answers = list(pool.map(lambda n: _ask(n, source, query, timeout, search_limit),
                                    ts_nodes))
    try:
        merged = heapq.merge(*[sorted(((g, s, a.owner) for g, s in a.pairs or ()),
                                      key=_sort_key(query)) for a in answers],
                             key=_sort_key(query))
        page = list(merged)[query.offset:query.offset + query.per_page]
        by_owner = {a.owner: a for a in answers}
        rows = []
        for owner in {item[2] for item in page}:
            answer = by_owner[owner]
            wanted = [g for g, _, o in page if o == owner]
            if answer.rows is not None:
                found = answer.rows
            else:
                try:
                    found = stats.read_rows(answer.client, stats.TopicKeys.of(
                        source.prefix, owner), wanted)
                except (RedisError, OSError) as exc:
                    answer.error = safe_error(exc, source.cluster.node(owner).redis_url)
                    continue
            rows.extend(_row(found[g], owner, now) for g in wanted if g in found)
        position = {g: i for i, (g, _, _) in enumerate(page)}
        rows.sort(key=lambda r: position[r["group"]])
    finally:
        for answer in answers:
            if answer.client is not None:
                answer.client.close()
    total = sum(a.total for a in answers)
    return {
        "query": query.search, "order": query.order, "descending": query.descending,
        "page": query.page, "per_page": query.per_page, "total": total,
        "pages": max(1, math.ceil(total / query.per_page)), "rows": rows,
        "truncated": any(a.truncated for a in answers), "search_limit": search_limit,
        "errors": [{"node": a.owner, "error": a.error} for a in answers if a.error],
        "generated": now,
    }


def topic_detail(source: Source, text: str, timeout: float) -> dict[str, Any]:
    """One topic (``topics:NAME`` or a group): its owner, with the hash that decided it, and
    its row at that owner (None when the owner has no members for it)."""
    ring = Ring(n.name for n in source.cluster.ts_nodes)
    lookup = owner_lookup(ring, text) or {"query": text, "owner": None,
                                          "error": "no topic given"}
    result: dict[str, Any] = {"lookup": lookup, "row": None, "error": lookup.get("error")}
    if lookup["owner"] is None:
        return result
    group, owner = lookup["group"], lookup["owner"]
    now = time.time()
    if source.cluster.embedded:
        answers = _in_memory(source, TopicQuery(search=group))
        row = answers[0].rows.get(group) if answers else None
        result["row"] = None if row is None else _row(row, owner, now)
        return result
    node = source.cluster.node(owner)
    client = _client(node, timeout)
    try:
        found = stats.read_rows(client, stats.TopicKeys.of(source.prefix, owner), [group])
    except (RedisError, OSError) as exc:
        result["error"] = f"the owner {owner} did not answer: {safe_error(exc, node.redis_url)}"
        return result
    finally:
        client.close()
    if group in found:
        result["row"] = _row(found[group], owner, now)
    return result
