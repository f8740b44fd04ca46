from django.contrib.auth import views as auth_views
from django.urls import include, path
from rooms import views

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("rooms/<slug:name>/", views.room, name="room"),
    path("rooms/<slug:name>/announce", views.announce, name="announce"),
    path("dps/", include("topics.urls")),
]
