"""The settings of a local cluster's processes: the project's own, with the cluster's key.

``runcluster`` (:class:`topics.devtools.local_cluster.LocalCluster`) runs every node, and its
``migrate``, with ``DJANGO_SETTINGS_MODULE`` set to this module. It loads the project's settings
module (named by ``DPS_PROJECT_SETTINGS``: ``dps_site.settings``, or the project's
``mysite.settings``) and replaces ``SECRET_KEY`` by the random key generated for this cluster
(read from the 0600 file named by ``DPS_CLUSTER_SECRET_FILE``), so that no key anyone can read
in a repository signs the cluster's sessions and socket tokens. Nothing else changes.
"""
import os
from importlib import import_module
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from topics.devtools.cluster_plan import PROJECT_SETTINGS_ENV, SECRET_FILE_ENV

try:
    _project = import_module(os.environ[PROJECT_SETTINGS_ENV])
    _secret_file = Path(os.environ[SECRET_FILE_ENV])
except KeyError as missing:
    raise ImproperlyConfigured(f"{__name__} is the settings of runcluster's processes and needs "
                               f"{missing.args[0]} in the environment") from None

globals().update({name: getattr(_project, name) for name in dir(_project) if name.isupper()})
try:
    SECRET_KEY = _secret_file.read_text().strip()
except OSError as exc:
    raise ImproperlyConfigured(f"cannot read the cluster's key {_secret_file}: {exc.strerror}") \
        from None
