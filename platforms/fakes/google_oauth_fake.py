"""A local OAuth 2.0 token endpoint, as Google's answers refresh-token grants (tests only).

What it follows (https://developers.google.com/identity/protocols/oauth2/web-server#offline,
"Refreshing an access token"): a POST of ``grant_type=refresh_token`` with
``client_id``, ``client_secret`` and ``refresh_token`` is answered with JSON
``{"access_token", "expires_in", "scope", "token_type": "Bearer"}``; a refresh token that
was revoked (or never issued) gets HTTP 400 ``{"error": "invalid_grant", ...}``, a wrong
client HTTP 401 ``{"error": "invalid_client", ...}``. Access tokens expire: Google's last
about an hour (``expires_in`` 3599); here ``token_lifetime`` seconds, and
``expire_all()`` ends every token at once, as an hour passing would.

The Google Ads fake asks ``accepts(token)`` for every request's bearer token.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

DEFAULT_TOKEN_LIFETIME = 3599.0  # seconds, as Google answers


@dataclass(frozen=True)
class OAuthClient:
    client_id: str
    client_secret: str
    refresh_token: str


class OAuthTokenFake:
    """Token endpoint on 127.0.0.1 with its own clients, issued tokens and request count."""

    def __init__(self, *, token_lifetime: float = DEFAULT_TOKEN_LIFETIME) -> None:
        self.token_lifetime = token_lifetime
        self.refreshes = 0  # successful grants
        self.requests = 0  # every POST, refused or not
        self._lock = threading.Lock()
        self._clients: dict[str, OAuthClient] = {}  # refresh token -> client
        self._tokens: dict[str, float] = {}  # access token -> expiry (time.monotonic())
        self._server: ThreadingHTTPServer | None = None

    # Lifecycle -------------------------------------------------------------------------

    def start(self) -> OAuthTokenFake:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.fake = self  # type: ignore[attr-defined]
        self._server = server
        threading.Thread(target=server.serve_forever, name="google-oauth-fake", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def token_uri(self) -> str:
        if self._server is None:
            raise RuntimeError("The OAuth token fake is not started.")
        return f"http://127.0.0.1:{self._server.server_port}/token"

    def reset(self) -> None:
        with self._lock:
            self._clients.clear()
            self._tokens.clear()
            self.refreshes = self.requests = 0
        self.token_lifetime = DEFAULT_TOKEN_LIFETIME

    # Clients and tokens ----------------------------------------------------------------

    def register(self, *, client_id: str, client_secret: str, refresh_token: str) -> None:
        """An OAuth client and the refresh token a user granted it."""
        with self._lock:
            self._clients[refresh_token] = OAuthClient(client_id, client_secret, refresh_token)

    def revoke(self, refresh_token: str) -> None:
        """The user revoked access: the refresh token no longer works (invalid_grant)."""
        with self._lock:
            self._clients.pop(refresh_token, None)

    def issue(self, *, lifetime: float | None = None) -> str:
        """A valid access token, as if a refresh had just happened."""
        token = "ya29.fake-" + secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = time.monotonic() + (self.token_lifetime if lifetime is None else lifetime)
        return token

    def expire_all(self) -> None:
        with self._lock:
            self._tokens = dict.fromkeys(self._tokens, 0.0)

    def accepts(self, token: str) -> str:
        """ "valid", "expired" or "invalid" for an access token."""
        with self._lock:
            expiry = self._tokens.get(token)
        if expiry is None:
            return "invalid"
        return "valid" if time.monotonic() < expiry else "expired"

    def grant(self, form: dict[str, str]) -> tuple[int, dict]:
        """The answer to one POST to the token endpoint."""
        with self._lock:
            self.requests += 1
            client = self._clients.get(form.get("refresh_token", ""))
        if form.get("grant_type") != "refresh_token":
            return 400, {"error": "unsupported_grant_type", "error_description": "Only refresh_token is served."}
        if client is None:
            return 400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
        if (form.get("client_id"), form.get("client_secret")) != (client.client_id, client.client_secret):
            return 401, {"error": "invalid_client", "error_description": "The OAuth client was not found."}
        token = self.issue()
        with self._lock:
            self.refreshes += 1
        return 200, {
            "access_token": token,
            "expires_in": int(self.token_lifetime),
            "scope": "https://www.googleapis.com/auth/adwords",
            "token_type": "Bearer",
        }


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = dict(parse_qsl(self.rfile.read(length).decode()))
        status, payload = self.server.fake.grant(form)  # type: ignore[attr-defined]
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Silence the per-request stderr line."""
