from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_POST

from topics.api import broadcast

from .models import Room


@require_POST
@login_required
def announce(request: HttpRequest, name: str) -> JsonResponse:
    """A member announces something to the room, from an ordinary Django view."""
    room = get_object_or_404(Room, name=name, members=request.user)
    broadcast(f"rooms:{room.name}", "announcement", {"text": request.POST.get("text", ""),
                                                     "by": request.user.username})
    return JsonResponse({"status": "sent"})


@login_required
def room(request: HttpRequest, name: str) -> HttpResponse:
    """The room's page; its script joins ``rooms:NAME`` with the page's session."""
    return render(request, "rooms/room.html", {"room": get_object_or_404(Room, name=name)})
