"""The plain-Channels baseline serves no HTTP pages."""
urlpatterns: list = []
