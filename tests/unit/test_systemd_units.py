"""The systemd units in deploy/systemd: one per role, templated by node name, supervising."""
from __future__ import annotations

import configparser
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string((UNITS / name).read_text())
    return parser


@pytest.mark.parametrize(("name", "command", "restart"), [
    ("dps-ws@.service", "daphne -b ${DPS_BIND} -p ${DPS_PORT} --ping-interval 600 dps_site.asgi:application",
     "always"),
    # A removed topic server drains and exits 0: it must stay stopped.
    ("dps-ts@.service", "python manage.py topic_server", "on-failure"),
    ("dps-redis@.service", "redis-server /etc/dps/redis-%i.conf", "always"),
])
def test_each_role_is_one_supervised_unit_per_node(name: str, command: str,
                                                   restart: str) -> None:
    service = unit(name)["Service"]
    assert command in service["ExecStart"]
    assert service["Restart"] == restart
    assert unit(name)["Unit"]["StartLimitIntervalSec"] == "0"  # never gives up
    assert service["User"] != "root"
    if name != "dps-redis@.service":
        assert "DPS_NODE=%i" in service["Environment"]
        assert "DJANGO_DEBUG=0" in service["Environment"]
        # The secret key comes from a root-only file, never from the unit itself.
        assert "/etc/dps/secrets.env" in (UNITS / name).read_text()
        assert "SECRET_KEY=" not in (UNITS / name).read_text()
        assert "dps-redis@%i.service" in unit(name)["Unit"]["After"]
