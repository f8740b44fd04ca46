"""DPS's token and publishing endpoints (``topics.urls``, mounted at ``/dps/``); the node's
metrics and admin pages live in ``topics.operator.views`` and ``topics.operator.admin_pages``.

- ``GET /dps/token/``: a logged-in user's socket token as JSON, for phoenix.js ``params``.
- ``POST /dps/api/publish``: publishing for non-Python back ends, with a key of
  ``DPS_API_KEYS`` (``Authorization: Bearer KEY``); 401 without a valid key, 400 for a bad body,
  202 once the topic's owner has it.
"""
from __future__ import annotations

import hmac
import json
import logging

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from topics.api import BroadcastError, abroadcast
from topics.hooks.auth import DEFAULT_TOKEN_TTL, issue_token

logger = logging.getLogger(__name__)


@never_cache
@require_GET
def token(request: HttpRequest) -> JsonResponse:
    if not request.user.is_authenticated:
        return JsonResponse({"error": "log in to get a socket token"}, status=403)
    ttl = float(getattr(settings, "DPS_TOKEN_TTL", DEFAULT_TOKEN_TTL))
    return JsonResponse({"token": issue_token(request.user, ttl), "expires_in": ttl})


def _api_key(request: HttpRequest) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() == "bearer" and key.strip():
        return key.strip()
    return request.headers.get("X-DPS-API-Key") or None


def _key_is_valid(key: str | None) -> bool:
    if key is None:
        return False
    valid = False
    for candidate in getattr(settings, "DPS_API_KEYS", ()):  # compare with every key: no early exit
        valid |= hmac.compare_digest(key.encode(), str(candidate).encode())
    return valid


def _bad_request(message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=400)


@csrf_exempt  # an API for servers, authenticated by key, not by a browser's cookie
@require_POST
async def publish(request: HttpRequest) -> JsonResponse:
    if not _key_is_valid(_api_key(request)):
        return JsonResponse({"error": "a valid API key is required (Authorization: Bearer KEY)"},
                            status=401, headers={"WWW-Authenticate": "Bearer"})
    try:
        body = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        return _bad_request("the body must be a JSON object {\"topic\", \"event\", \"payload\"}")
    if not isinstance(body, dict):
        return _bad_request("the body must be a JSON object {\"topic\", \"event\", \"payload\"}")
    missing = [name for name in ("topic", "event", "payload") if name not in body]
    if missing:
        return _bad_request(f"missing field(s): {', '.join(missing)}")
    extra = sorted(set(body) - {"topic", "event", "payload"})
    if extra:
        return _bad_request(f"unknown field(s): {', '.join(extra)}")
    try:
        await abroadcast(body["topic"], body["event"], body["payload"])
    except BroadcastError as exc:
        return _bad_request(str(exc))
    except Exception as exc:
        logger.warning("API publish to %r failed: %s", body["topic"], type(exc).__name__)
        return JsonResponse({"error": f"publish failed: {type(exc).__name__}"}, status=503)
    return JsonResponse({"status": "accepted"}, status=202)
