"""Which addresses this process's ASGI server listens on, and whether they are loopback.

A WS node imports its ASGI application before its server binds, so at import time the bind is
known only from the server's command line: :func:`bind_hosts` reads it with the server's own
option parser (daphne, uvicorn), or the options gunicorn, hypercorn and ``runserver`` take. A
socket inherited as a file descriptor is asked its address. An unknown launcher (a program that
calls ``uvicorn.run``, systemd socket activation) gives None: then
:class:`RefuseNetworkRequests` judges each connection by the address it arrived on
(``scope["server"]``) instead.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import socket
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)

UNIX = "unix"  # what a Unix-domain socket's "host" is reported as: not on the network
_DEFAULT_HOST = "127.0.0.1"  # every server here defaults to it (runserver too)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name, maybe in brackets) reaches this machine only.
    Any name but ``localhost`` may resolve to a routable address, so it counts as network."""
    host = host.strip().strip("[]").lower()
    if host in (UNIX, "localhost") or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "", "0.0.0.0"-like names, hostnames


def _fd_host(fd: int) -> str | None:
    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            if sock.family == socket.AF_UNIX:
                return UNIX
            return str(sock.getsockname()[0])
    except OSError:
        return None


def _daphne_hosts(args: Sequence[str]) -> list[str] | None:
    from daphne.cli import CommandLineInterface

    try:
        options = CommandLineInterface().parser.parse_args(list(args))
    except SystemExit:
        return None
    hosts: list[str] = []
    for endpoint in options.socket_strings:  # Twisted endpoints: tcp:8000:interface=0.0.0.0
        kind, _, rest = endpoint.partition(":")
        fields = dict(part.partition("=")[::2] for part in rest.split(":") if "=" in part)
        if kind == "unix":
            hosts.append(UNIX)
        elif kind == "fd" and fields.get("fileno", "").isdigit():
            hosts.append(_fd_host(int(fields["fileno"])) or "")
        else:
            hosts.append(fields.get("interface", ""))  # no interface: every interface
    if options.unix_socket:
        hosts.append(UNIX)
    if options.file_descriptor is not None:
        hosts.append(_fd_host(options.file_descriptor) or "")
    if options.host or options.port is not None or not hosts:
        hosts.append(options.host or _DEFAULT_HOST)
    return hosts


def _uvicorn_hosts(args: Sequence[str]) -> list[str] | None:
    import click
    from uvicorn.main import main

    try:
        params = main.make_context("uvicorn", list(args), resilient_parsing=True).params
    except click.ClickException:
        return None
    if params.get("fd") is not None:
        return [_fd_host(params["fd"]) or ""]
    if params.get("uds"):
        return [UNIX]
    return [params.get("host") or _DEFAULT_HOST]


def _bind_option_hosts(args: Sequence[str]) -> list[str]:
    """gunicorn's and hypercorn's ``-b/--bind`` (repeatable; ``unix:``, ``fd://N``)."""
    values: list[str] = []
    for index, arg in enumerate(args):
        if arg in ("-b", "--bind") and index + 1 < len(args):
            values.append(args[index + 1])
        elif arg.startswith("--bind="):
            values.append(arg.split("=", 1)[1])
        elif arg.startswith("-b") and len(arg) > 2:
            values.append(arg[2:])
    hosts = []
    for value in values:
        if value.startswith("unix:"):
            hosts.append(UNIX)
        elif value.startswith("fd://") and value[5:].isdigit():
            hosts.append(_fd_host(int(value[5:])) or "")
        else:
            hosts.append(value.rsplit(":", 1)[0] if value.count(":") == 1 or "]" in value
                         else value)
    return hosts or [_DEFAULT_HOST]


def _runserver_hosts(args: Sequence[str]) -> list[str]:
    positional = [arg for arg in args if not arg.startswith("-")]
    if not positional or positional[0].isdigit():
        return ["::1" if "-6" in args or "--ipv6" in args else _DEFAULT_HOST]
    host = positional[0].rsplit(":", 1)[0] if ":" in positional[0] else positional[0]
    return ["0.0.0.0" if host == "0" else host]  # runserver's own shorthand


def bind_hosts(argv: Sequence[str]) -> list[str] | None:
    """The hosts the server started by ``argv`` (``sys.argv``) binds, ``""`` for every
    interface and ``"unix"`` for a Unix socket; None when ``argv`` is no server this knows."""
    if not argv:
        return None
    program = os.path.basename(os.path.dirname(argv[0]) if argv[0].endswith("__main__.py")
                               else argv[0])
    args = list(argv[1:])
    if program.startswith("daphne"):
        return _daphne_hosts(args)
    if program.startswith("uvicorn"):
        return _uvicorn_hosts(args)
    if program.startswith(("gunicorn", "hypercorn")):
        return _bind_option_hosts(args)
    if args[:1] == ["runserver"]:
        return _runserver_hosts(args[1:])
    return None


def network_hosts(argv: Sequence[str]) -> list[str]:
    """The hosts of :func:`bind_hosts` that are not loopback (``0.0.0.0`` for every interface)."""
    return [host or "0.0.0.0" for host in bind_hosts(argv) or () if not is_loopback(host)]


def arrived_over_network(scope: dict[str, Any]) -> bool:
    """Whether a connection came in on a non-loopback address (``scope["server"]``)."""
    server = scope.get("server")
    if not server or not isinstance(server[0], str):
        return False  # a Unix socket, or a server that does not say
    try:
        return not ipaddress.ip_address(server[0]).is_loopback
    except ValueError:
        return False


class RefuseNetworkRequests:
    """ASGI middleware for a node that must not serve over the network (it holds a public
    SECRET_KEY): a request or handshake that arrived on a non-loopback address gets 403."""

    def __init__(self, app: Any, reason: str) -> None:
        self.app = app
        self.reason = reason
        self.warned = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or not arrived_over_network(scope):
            return await self.app(scope, receive, send)
        if not self.warned:
            self.warned = True
            logger.error("refused a request on %s: %s", scope["server"][0], self.reason)
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close"})  # before accept: HTTP 403
            return
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
        await send({"type": "http.response.body", "body": self.reason.encode() + b"\n"})
