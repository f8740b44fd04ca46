"""``manage.py check`` names every bad DPS setting and says what it expected (topics.checks),
the layer refuses a wrongly typed key, and dps_site's environment gives one clear line."""
from __future__ import annotations

import pytest

from channel_layer.settings import LayerSettings
from topics.checks import check_dps_settings, refuse_on_errors

CLUSTER = {"nodes": [{"name": "ws-a", "role": "ws", "redis": "redis://127.0.0.1:1/0"},
                     {"name": "ts-a", "role": "ts", "redis": "redis://127.0.0.1:2/0"}]}


def _messages() -> list[str]:
    return [f"{e.obj}: ({e.id}) {e.msg}" for e in check_dps_settings()]


def test_the_repository_settings_are_clean():
    assert _messages() == []


@pytest.mark.parametrize(("name", "value", "message"), [
    ("DPS_MAX_CONNECTIONS", "many",
     "DPS_MAX_CONNECTIONS: (dps.E002) expected a positive integer, not 'many'"),
    ("DPS_IDLE_TIMEOUT", 0, "DPS_IDLE_TIMEOUT: (dps.E002) expected a positive number of "
     "seconds, not 0"),
    ("DPS_ALLOW_ANONYMOUS", "0", "DPS_ALLOW_ANONYMOUS: (dps.E002) expected True or False, not '0'"),
    ("DPS_API_KEYS", "k1,k2", "DPS_API_KEYS: (dps.E002) expected a list of strings, not 'k1,k2'"),
    ("DPS_IDLE_TIMOUT", 30,
     "DPS_IDLE_TIMOUT: (dps.E001) unknown DPS setting; did you mean DPS_IDLE_TIMEOUT?"),
    ("DPS_CONNECT", "myapp.nowhere.connect", "DPS_CONNECT: (dps.E003) 'myapp.nowhere.connect' "
     "does not import (No module named 'myapp')"),
    ("DPS_TOPICS", {"chat:*": "topics.hooks.handlers.Refused"}, "DPS_TOPICS: (dps.E003) pattern "
     "'chat:*': 'topics.hooks.handlers.Refused' is not a TopicHandler subclass"),
    ("DPS_LAYER", {"node_timeout": "ten"},
     "DPS_LAYER: (dps.E004) node_timeout must be a number > 0, not 'ten'"),
    ("DPS_LAYER", {"node_timout": 10}, "DPS_LAYER: (dps.E004) unknown key 'node_timout'"),
])
def test_a_bad_setting_is_named_with_what_was_expected(settings, name, value, message):
    setattr(settings, name, value)
    found = _messages()
    assert len(found) == 1 and found[0].startswith(message), found


def test_the_layers_own_config_is_checked(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channel_layer.DPSChannelLayer",
                                           "CONFIG": {"capacity": -1}}}
    assert _messages() == ['CHANNEL_LAYERS["default"]["CONFIG"]: (dps.E004) capacity must be an '
                           "integer > 0, not -1"]


def test_a_node_not_in_the_cluster_is_named(settings, monkeypatch):
    monkeypatch.delenv("DPS_CLUSTER", raising=False)
    monkeypatch.delenv("DPS_NODE", raising=False)
    settings.DPS_CLUSTER, settings.DPS_NODE = CLUSTER, "ws-z"
    assert _messages() == ["DPS_CLUSTER/DPS_NODE: (dps.E005) unknown node 'ws-z' in "
                           "settings.DPS_CLUSTER (known nodes: ws-a, ts-a)"]
    with pytest.raises(SystemExit, match="(?s)DPS cannot start: .*unknown node 'ws-z'"):
        refuse_on_errors()


def test_the_layer_refuses_a_wrongly_typed_key():
    with pytest.raises(ValueError, match="node_timeout must be a number > 0, not 'ten'"):
        LayerSettings.from_config({"node_timeout": "ten"})
    assert LayerSettings.from_config({"node_timeout": 3}).node_timeout == 3


@pytest.mark.parametrize(("variable", "value", "expected"), [
    ("DPS_IDLE_TIMEOUT", "abc", "dps_site settings: DPS_IDLE_TIMEOUT='abc' in the environment: "
     "expected a number"),
    ("DPS_LAYER", "not json", "dps_site settings: DPS_LAYER='not json' in the environment: "
     "expected a JSON object"),
])
def test_dps_sites_environment_gives_one_clear_line(monkeypatch, variable, value, expected):
    from dps_site import settings as site

    monkeypatch.setenv(variable, value)
    read = site._json_object if variable == "DPS_LAYER" else (lambda n: site._float(n, 60))
    with pytest.raises(SystemExit) as stopped:
        read(variable)
    assert str(stopped.value).startswith(expected)
