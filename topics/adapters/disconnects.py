"""The exceptions that mean "the client went away" under each server, registered with the
layer (``channel_layer.local_channels.register_disconnect_errors``), which imports nothing about
ASGI servers: a fastlane delivery that raises one is counted as a delivery to a closed client,
not logged as a failure. Public exception types, so this is no patch (no switch, no window)."""
from __future__ import annotations

from channel_layer.local_channels import register_disconnect_errors


def register_server_disconnect_errors() -> None:
    try:  # daphne's autobahn: a send on a closed protocol
        from autobahn.exception import Disconnected
    except ImportError:
        pass
    else:
        register_disconnect_errors(Disconnected)
    try:
        from uvicorn.protocols.utils import ClientDisconnected
    except ImportError:
        pass
    else:
        register_disconnect_errors(ClientDisconnected)
