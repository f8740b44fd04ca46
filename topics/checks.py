"""Django system checks of DPS's settings (``manage.py check``; registered in ``apps.py``).

Each problem is one ``Error`` naming the setting and saying what was expected: an unknown
``DPS_*`` key, a wrong type or a bad value (:mod:`topics.conf`), a bad key of the layer
(``DPS_LAYER`` or ``CHANNEL_LAYERS["default"]["CONFIG"]``), a ``DPS_CONNECT`` or ``DPS_TOPICS``
path that does not import, an unusable cluster file or a ``DPS_NODE`` not in it. Django runs
the checks before ``runserver``, ``topic_server`` and every other command; a WS node's ASGI
application (:mod:`topics.asgi`) runs them before it serves and refuses to start on an error.
"""
from __future__ import annotations

import difflib
from typing import Any

from django.conf import settings
from django.core.checks import Error, register
from django.utils.module_loading import import_string

from topics.conf import BY_NAME

DPS_BACKEND = "channel_layer.DPSChannelLayer"


def _error(setting: str, message: str, number: int) -> Error:
    return Error(message, id=f"dps.E{number:03d}", obj=setting)


def _unknown(name: str) -> Error:
    close = difflib.get_close_matches(name, BY_NAME, n=1)
    hint = f"; did you mean {close[0]}?" if close else " (docs/settings.md lists every setting)"
    return _error(name, f"unknown DPS setting{hint}", 1)


def _typed() -> list[Error]:
    found = []
    for name in sorted(set(dir(settings))):
        if not name.startswith("DPS_"):
            continue
        spec = BY_NAME.get(name)
        if spec is None:
            found.append(_unknown(name))
            continue
        value = getattr(settings, name)
        if not spec.valid(value):
            found.append(_error(name, f"expected {spec.expected}, not {value!r}", 2))
    return found


def _imports(name: str, path: Any) -> str | None:
    if not isinstance(path, str):
        return None if callable(path) else f"expected a dotted path, not {path!r}"
    try:
        import_string(path)
    except ImportError as exc:
        return f"{path!r} does not import ({exc})"
    return None


def _hooks() -> list[Error]:
    found = []
    connect = getattr(settings, "DPS_CONNECT", None)
    if isinstance(connect, str) and (problem := _imports("DPS_CONNECT", connect)):
        found.append(_error("DPS_CONNECT", problem, 3))
    topics = getattr(settings, "DPS_TOPICS", None)
    if isinstance(topics, dict):
        from topics.hooks.handlers import TopicHandler

        for pattern, handler in topics.items():
            problem = _imports("DPS_TOPICS", handler)
            if problem is None:
                cls = import_string(handler) if isinstance(handler, str) else handler
                if not (isinstance(cls, type) and issubclass(cls, TopicHandler)):
                    problem = f"{handler!r} is not a TopicHandler subclass"
            if problem:
                found.append(_error("DPS_TOPICS", f"pattern {pattern!r}: {problem}", 3))
    return found


def _layer() -> list[Error]:
    from channel_layer.settings import LayerSettings

    found = []
    layers = getattr(settings, "CHANNEL_LAYERS", None) or {}
    default = layers.get("default", {}) if isinstance(layers, dict) else {}
    if default.get("BACKEND") == DPS_BACKEND:
        config = dict(default.get("CONFIG") or {})
        config.pop("cluster", None)  # the layer's own arguments, not its settings
        config.pop("node", None)
        for problem in LayerSettings.problems(config):
            found.append(_error('CHANNEL_LAYERS["default"]["CONFIG"]', problem, 4))
    layer = getattr(settings, "DPS_LAYER", None)
    if isinstance(layer, dict):
        for problem in LayerSettings.problems(layer):
            found.append(_error("DPS_LAYER", problem, 4))
    return found


def _cluster() -> list[Error]:
    from channel_layer.cluster import ClusterConfigError, current_node_name, load_cluster

    cluster_setting = getattr(settings, "DPS_CLUSTER", None)
    node_setting = getattr(settings, "DPS_NODE", None)
    if not (cluster_setting is None or isinstance(cluster_setting, dict)):
        return []  # reported by _typed
    try:
        cluster = load_cluster(cluster_setting)
        current_node_name(cluster, node_setting if isinstance(node_setting, str) else None)
    except ClusterConfigError as exc:
        return [_error("DPS_CLUSTER/DPS_NODE", str(exc), 5)]
    return []


@register("dps")
def check_dps_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """Every DPS setting problem of this project, one ``Error`` each."""
    return [*_typed(), *_hooks(), *_layer(), *_cluster()]


def refuse_on_errors() -> None:
    """Stop this process, naming every problem, when the DPS checks find one (a WS node's
    start-up: daphne and uvicorn run no system checks of their own)."""
    errors = check_dps_settings()
    if errors:
        lines = "\n".join(f"  {e.obj}: ({e.id}) {e.msg}" for e in errors)
        raise SystemExit(f"DPS cannot start: its settings have errors:\n{lines}")
