"""The ``Authorization`` of requests to the FHIR server: a static bearer token (or a file
holding it, read at each request: a rotated token is used at once), or an OAuth2 access
token from the client credentials grant (RFC 6749 section 4.4), kept until shortly before
it expires and fetched again after the server answered 401."""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Protocol

#: an access token is fetched again this many seconds before its expires_in runs out
EXPIRY_MARGIN = 30.0
#: the lifetime assumed of an access token answered without expires_in
DEFAULT_LIFETIME = 300.0


class AuthError(Exception):
    """No access token: the token endpoint refused or could not be reached."""


class Auth(Protocol):
    def header(self) -> str:
        """The Authorization header value ('' for none)."""

    def invalidate(self) -> bool:
        """The server answered 401: forget a cached token; whether asking again may help."""


def secret(value: str, file: str) -> str:
    """A setting given as a value or as the file holding it (stripped)."""
    if value:
        return value
    if file:
        return Path(file).read_text("utf-8").strip()
    return ""


class NoAuth:
    def header(self) -> str:
        return ""

    def invalidate(self) -> bool:
        return False


class BearerToken:
    """A token the site gives (``token``, or ``token_file`` read at each request)."""

    def __init__(self, token: str, token_file: str = "") -> None:
        self.token, self.token_file = token, token_file

    def header(self) -> str:
        return f"Bearer {secret(self.token, self.token_file)}"

    def invalidate(self) -> bool:
        return bool(self.token_file)  # the file may hold a new token by now


class ClientCredentials:
    """OAuth2 client credentials: the client authenticates with HTTP Basic (RFC 6749
    2.3.1); the access token is cached (thread-safe) until ``EXPIRY_MARGIN`` before it
    expires."""

    def __init__(self, token_url: str, client_id: str, client_secret: str,
                 client_secret_file: str = "", scope: str = "", timeout: float = 10.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.token_url, self.client_id, self.scope = token_url, client_id, scope
        self.client_secret, self.client_secret_file = client_secret, client_secret_file
        self.timeout, self.ssl_context = timeout, ssl_context
        self._lock = threading.Lock()
        self._token = ""
        self._expires = 0.0
        self.fetched = 0  # how many tokens were fetched (for tests and logs)

    def header(self) -> str:
        with self._lock:
            if not self._token or time.monotonic() >= self._expires:
                self._token, lifetime = self._fetch()
                self._expires = time.monotonic() + max(lifetime - EXPIRY_MARGIN, 0.0)
                self.fetched += 1
            return f"Bearer {self._token}"

    def invalidate(self) -> bool:
        with self._lock:
            self._token, self._expires = "", 0.0
        return True

    def _fetch(self) -> tuple[str, float]:
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        # RFC 6749 2.3.1: the client ID and secret form-encoded, then HTTP Basic
        password = secret(self.client_secret, self.client_secret_file)
        credentials = (f"{urllib.parse.quote_plus(self.client_id, safe='')}:"
                       f"{urllib.parse.quote_plus(password, safe='')}")
        request = urllib.request.Request(
            self.token_url, data=urllib.parse.urlencode(form).encode(), method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded",
                     "Accept": "application/json",
                     "Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout,
                                        context=self.ssl_context) as answer:
                body = json.loads(answer.read() or b"{}")
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode("utf-8", "replace")
            raise AuthError(f"token endpoint answered {exc.code}: {detail}") from None
        except (OSError, ValueError) as exc:
            raise AuthError(f"token endpoint: {type(exc).__name__}: {exc}") from None
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise AuthError("token endpoint answered no access_token")
        try:
            lifetime = float(body.get("expires_in", DEFAULT_LIFETIME))
        except (TypeError, ValueError):
            lifetime = DEFAULT_LIFETIME
        return token, lifetime
