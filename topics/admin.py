"""Django autodiscovers ``<app>.admin``: the operator's pages register in ``topics.operator.admin_pages``."""
from topics.operator import admin_pages  # noqa: F401
