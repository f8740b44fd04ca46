"""The hash ring as a picture: arcs per topic server and hot topics at their hash positions.

Pure geometry, no I/O: the admin's cluster template turns what :func:`ring_drawing` returns into
an inline SVG. Position 0 of the hash space is at the top and positions grow clockwise; a
point of the ring owns the arc from the point before it up to itself, as the ring decides.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from channel_layer.ring import HASH_SPACE, Ring

SIZE = 320                     # the SVG's width and height
CENTER = SIZE / 2
RADIUS = 120                   # the ring's circle
MARKER_RADIUS = RADIUS + 16    # hot-topic markers sit just outside it
# Distinct on a light and a dark background; a down node is drawn grey whatever its colour.
PALETTE = ("#417690", "#e8a33d", "#5b9a68", "#b35a8a", "#7d6bc4", "#c9503f", "#3b9fb5",
           "#8a8d37")
DOWN_COLOUR = "#9a9a9a"


@dataclass(frozen=True)
class HotTopic:
    topic: str
    group: str
    owner: str
    rate: float


def colour_of(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _point(position: float, radius: float) -> tuple[float, float]:
    angle = 2 * math.pi * position / HASH_SPACE
    return (round(CENTER + radius * math.sin(angle), 2),
            round(CENTER - radius * math.cos(angle), 2))


def _arc_path(start: int, end: int) -> str:
    x0, y0 = _point(start, RADIUS)
    x1, y1 = _point(end, RADIUS)
    large = 1 if end - start > HASH_SPACE / 2 else 0
    return f"M {x0} {y0} A {RADIUS} {RADIUS} 0 {large} 1 {x1} {y1}"


def owned_arcs(ring: Ring) -> dict[str, list[tuple[int, int]]]:
    """Each node's arcs as (start, end) positions, neighbouring arcs of one node merged; the
    arc that crosses position 0 is split there."""
    points = ring.points()
    arcs: dict[str, list[tuple[int, int]]] = {node: [] for node in ring.nodes}
    previous = points[-1][0] - HASH_SPACE
    for position, node in points:
        start = max(previous, 0)
        if previous < 0:  # the wrap-around arc: its part before 0 ends the circle
            arcs[node].append((HASH_SPACE + previous, HASH_SPACE))
        mine = arcs[node]
        if mine and mine[-1][1] == start:
            mine[-1] = (mine[-1][0], position)
        else:
            mine.append((start, position))
        previous = position
    return arcs


def shares(ring: Ring) -> dict[str, float]:
    """Each node's exact share of the hash space."""
    return {node: sum(end - start for start, end in spans) / HASH_SPACE
            for node, spans in owned_arcs(ring).items()}


def ring_drawing(ring: Ring, down: Iterable[str], hot: Sequence[HotTopic]) -> dict[str, Any]:
    """What the template draws: one arc group per node, one marker per hot topic."""
    down = set(down)
    colours = {node: colour_of(i) for i, node in enumerate(ring.nodes)}
    share = shares(ring)
    groups = [{"node": node, "colour": DOWN_COLOUR if node in down else colours[node],
               "down": node in down, "share": share[node],
               "paths": [_arc_path(s, e) for s, e in spans]}
              for node, spans in owned_arcs(ring).items()]
    hottest = max((t.rate for t in hot), default=0.0) or 1.0
    markers = []
    for topic in hot:
        position = ring.position_of(topic.group)
        x, y = _point(position, MARKER_RADIUS)
        markers.append({"topic": topic.topic, "owner": topic.owner, "rate": topic.rate,
                        "x": x, "y": y, "r": round(3 + 4 * topic.rate / hottest, 1),
                        "colour": DOWN_COLOUR if topic.owner in down else colours.get(
                            topic.owner, DOWN_COLOUR),
                        "position": f"{position / HASH_SPACE:.4f}"})
    return {"size": SIZE, "center": CENTER, "radius": RADIUS, "groups": groups,
            "markers": markers}
