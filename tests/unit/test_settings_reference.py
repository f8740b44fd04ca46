"""The settings the code reads, the table that checks them (topics/conf.py) and their reference
(docs/settings.md) name the same settings; and DPS reads no environment variable but the two
the reference names."""
from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

from channel_layer.settings import LayerSettings
from topics.conf import BY_NAME

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = [p for package in ("topics", "channel_layer") for p in (ROOT / package).rglob("*.py")
           if "devtools" not in p.parts]
READERS = {"getattr", "_setting", "_django_setting"}  # getattr(settings, "DPS_X", ...) and the like
ENVIRONMENT = {"DPS_CLUSTER", "DPS_NODE"}


def _longpoll_names() -> set[str]:
    from topics.transport.longpoll import LongPollLimits

    return {f"DPS_LONGPOLL_{f.name.upper()}" for f in dataclasses.fields(LongPollLimits)}


# Names built at run time, getattr(settings, f"PREFIX{...}"): what each prefix expands to.
DYNAMIC = {"DPS_LONGPOLL_": _longpoll_names}


def _reads(tree: ast.AST) -> tuple[set[str], set[str]]:
    """(DPS settings read, DPS environment variables read) in one module."""
    settings, environ = set(), set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("DPS_")
                and isinstance(node.value, ast.Name) and node.value.id == "settings"):
            settings.add(node.attr)
        elif isinstance(node, ast.Call):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            for arg in node.args:
                if (name in READERS and isinstance(arg, ast.JoinedStr) and arg.values
                        and isinstance(arg.values[0], ast.Constant)
                        and str(arg.values[0].value).startswith("DPS_")):
                    settings.add(f"{arg.values[0].value}*")
            texts = [a.value for a in node.args if isinstance(a, ast.Constant)
                     and isinstance(a.value, str) and a.value.startswith("DPS_")]
            if not texts:
                continue
            target = ast.unparse(node.func)
            if name in READERS:
                settings.update(texts)
            if "environ" in target or target in ("os.getenv", "env.get"):
                environ.update(texts)
        elif (isinstance(node, ast.Subscript) and "environ" in ast.unparse(node.value)
              and isinstance(node.slice, ast.Constant) and str(node.slice.value).startswith("DPS_")):
            environ.add(node.slice.value)
    return settings, environ


def _code_reads() -> tuple[set[str], set[str]]:
    settings, environ = set(), set()
    for path in PRODUCT:
        found = _reads(ast.parse(path.read_text(), str(path)))
        settings |= found[0]
        environ |= found[1]
    for pattern in [name for name in settings if name.endswith("*")]:
        settings.discard(pattern)
        assert pattern[:-1] in DYNAMIC, f"a setting name built at run time: {pattern}"
        settings |= DYNAMIC[pattern[:-1]]()
    return settings, environ


def _documented(section: str) -> set[str]:
    text = (ROOT / "docs" / "settings.md").read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Za-z_]+)` \|", body, re.M))


def test_the_code_the_table_and_the_reference_name_the_same_settings():
    read, _ = _code_reads()
    assert read - set(BY_NAME) == set(), "read by the code, missing from topics/conf.py"
    assert set(BY_NAME) - read == set(), "in topics/conf.py, read by no code"
    assert _documented("DPS settings") == set(BY_NAME)


def test_the_reference_lists_every_key_of_the_layer():
    channels_own = {"channel_capacity"}  # Channels' key, documented beside the layer's
    assert _documented("The layer") == {f.name for f in dataclasses.fields(LayerSettings)} | channels_own


def test_dps_reads_only_the_documented_environment_variables():
    _, environ = _code_reads()
    assert environ <= ENVIRONMENT
    assert _documented("The environment") == ENVIRONMENT


def test_the_walk_finds_every_form_of_read():
    tree = ast.parse('settings.DPS_A; getattr(settings, "DPS_B", 1); _setting("DPS_C", 2)\n'
                     'getattr(settings, f"DPS_G_{n}", 3)\n'
                     'os.environ.get("DPS_D"); os.environ["DPS_E"]; env.get("DPS_F")')
    assert _reads(tree) == ({"DPS_A", "DPS_B", "DPS_C", "DPS_G_*"}, {"DPS_D", "DPS_E", "DPS_F"})
