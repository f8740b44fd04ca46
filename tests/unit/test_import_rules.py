"""The import rules of docs/architecture.md, checked on the source: a pure ``ast`` walk of every
product module (nothing is imported or executed), so a rule fails with each offending
``file:line``, lazy imports inside functions and ``TYPE_CHECKING`` blocks included.

- ``channel_layer/`` is the layer and the topic server: it imports nothing of ``topics/`` or
  ``dps_site/`` and nothing about ASGI servers.
- Product code never imports the dev tooling ``topics.devtools``; only the dev tools' own
  management commands (local cluster, soak, benchmark) do.
- Data flows one way (socket -> consumer -> layer -> owner -> layer -> consumer -> socket): the
  pure protocol imports nothing else of DPS, and nothing on the data path imports the views
  built on top of it (the operator's view, the public API, the management commands).
"""
from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT_PACKAGES = ("channel_layer", "topics", "dps_site")
ASGI_SERVERS = ("daphne", "twisted", "autobahn", "uvicorn", "websockets", "hypercorn", "granian")

# Management commands that are dev tools themselves, and so may import topics.devtools.
DEV_TOOL_COMMANDS = tuple(f"topics.management.commands.{name}" for name in (
    "runcluster", "soak", "benchmark", "admin_benchmark", "benchmark_handlers",
    "benchmark_presence"))

# The views built on the data path: nothing on the path may import them.
VIEWS_ON_TOP = ("topics.operator", "topics.api", "topics.management", "topics.admin",
                "topics.urls", "topics.asgi", "dps_site")
DATA_PATH = ("channel_layer", "topics.protocol", "topics.transport", "topics.hooks",
             "topics.adapters")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # the imported module, dotted and absolute
    where: str  # path:line

    def __str__(self) -> str:
        return f"{self.where}: {self.module} imports {self.target}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> Iterator[Import]:
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, where)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against this module's package
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield Import(module, target, where)
            for alias in node.names:  # `from topics import devtools` imports topics.devtools
                yield Import(module, f"{target}.{alias.name}", where)


def all_imports() -> list[Import]:
    found = []
    for package in PRODUCT_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found.extend(imports_of(path))
    return found


IMPORTS = all_imports()


def within(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def broken(rule) -> list[str]:
    return sorted({str(i) for i in IMPORTS if rule(i)})


def assert_none(offenders: list[str], rule: str) -> None:
    assert not offenders, f"{rule}, broken by:\n" + "\n".join(offenders)


def test_the_walk_sees_the_product_and_resolves_relative_imports() -> None:
    # Guards the rules below against passing on nothing: the walk must find the known edges.
    importers = {i.module for i in IMPORTS}
    assert {"channel_layer.layer", "topics.transport.consumer", "dps_site.settings"} <= importers
    assert any(i.module == "topics.transport.consumer" and within(i.target, "channel_layer")
               for i in IMPORTS)


def test_a_relative_import_resolves_to_its_absolute_module(tmp_path, monkeypatch) -> None:
    package = tmp_path / "topics" / "transport"
    package.mkdir(parents=True)
    (package / "consumer.py").write_text(
        "from ..operator import views\nfrom . import sender\nimport daphne.server\n")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    targets = {i.target for i in imports_of(package / "consumer.py")}
    assert {"topics.operator", "topics.operator.views", "topics.transport.sender",
            "daphne.server"} <= targets


def test_channel_layer_imports_nothing_of_topics_dps_site_or_asgi_servers() -> None:
    assert_none(broken(lambda i: within(i.module, "channel_layer") and within(
        i.target, "topics", "dps_site", *ASGI_SERVERS)),
        "channel_layer/ must import nothing of topics/, dps_site/ or an ASGI server")


def test_product_code_never_imports_the_dev_tools() -> None:
    assert_none(broken(lambda i: within(i.target, "topics.devtools")
                       and not within(i.module, "topics.devtools", *DEV_TOOL_COMMANDS)),
                "only topics/devtools and the dev tools' commands may import topics.devtools")


def test_the_protocol_is_pure_and_imports_nothing_else_of_dps() -> None:
    assert_none(broken(lambda i: within(i.module, "topics.protocol")
                       and within(i.target, *PRODUCT_PACKAGES)
                       and not within(i.target, "topics.protocol")),
                "topics/protocol must import nothing of DPS outside itself")


@pytest.mark.parametrize("path_package", DATA_PATH)
def test_nothing_on_the_data_path_imports_the_views_built_on_it(path_package: str) -> None:
    assert_none(broken(lambda i: within(i.module, path_package)
                       and within(i.target, *VIEWS_ON_TOP)),
                f"{path_package} is on the data path and must not import {VIEWS_ON_TOP}")



def test_test_modules_import_helpers_only_from_tests_support() -> None:
    tests_dir = ROOT / "tests"
    offenders = sorted({
        str(i) for path in tests_dir.rglob("test_*.py") if "node_modules" not in path.parts
        for i in imports_of(path)
        if within(i.target, "tests.unit", "tests.integration", "tests.e2e")})
    assert_none(offenders, "a test module imports helpers from tests/support, never from "
                "another test module")
