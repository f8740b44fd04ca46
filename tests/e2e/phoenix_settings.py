"""Settings of the phoenix.js client tests' cluster: the test settings and ``fidelity:*``."""
from tests.settings import *  # noqa: F403

DPS_TOPICS = {**DPS_TOPICS, "fidelity:*": "tests.e2e.phoenix_site.FidelityTopic"}  # noqa: F405
DPS_PRESENCE = [*DPS_PRESENCE, "fidelity:*"]  # noqa: F405
