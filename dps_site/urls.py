"""HTTP routes of a DPS node: the Django admin, with the cluster's ring and topic statistics."""
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/dps/", include("topics.admin")),  # before admin/: its catch-all would match
    path("admin/", admin.site.urls),
]
