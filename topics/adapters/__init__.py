"""DPS's patches of its ASGI servers' internals (daphne with Twisted and autobahn; uvicorn
with websockets), all in this package, installed by one call::

    from topics import adapters
    adapters.install()   # topics.asgi does this when it builds the WebSocket app

Each patch buys speed or a specified answer the server's public path does not give; none is
needed for correctness (the suite also runs with every patch off). Each has its own switch
(``DPS_SERVER_PATCHES``) and is on only inside the versions it was tested with
(:mod:`topics.adapters.registry`; the table is in ``docs/adapters.md``).
"""
from topics.adapters.registry import active, install

__all__ = ["active", "install"]
