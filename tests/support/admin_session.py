"""A logged-in HTTP session with a running node's admin, on plain urllib (cookies, CSRF)."""
from __future__ import annotations

import http.cookiejar
import json
import urllib.error
import urllib.parse
import urllib.request


class Browser:
    """A logged-in HTTP session with the admin (cookies, CSRF), on plain urllib."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, path: str, **headers: str) -> tuple[int, bytes]:
        request = urllib.request.Request(self.base + path, headers=headers)
        try:
            with self.opener.open(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def login(self, username: str, password: str) -> None:
        self.get("/admin/login/")
        token = next(c.value for c in self.jar if c.name == "csrftoken")
        body = urllib.parse.urlencode({"username": username, "password": password,
                                       "csrfmiddlewaretoken": token,
                                       "next": "/admin/"}).encode()
        request = urllib.request.Request(self.base + "/admin/login/", data=body,
                                         headers={"Referer": self.base + "/admin/login/"})
        with self.opener.open(request, timeout=10) as response:
            assert response.url.endswith("/admin/"), response.url

    def json(self, path: str) -> dict:
        status, body = self.get(path)
        assert status == 200, (path, status, body[:200])
        return json.loads(body)
