#!/usr/bin/env python3
"""A small registry token issuer for tests, as Docker Hub's auth service behaves.

GET /token?service=S&scope=repository:NAME:pull[,push] answers {"token", "access_token",
"expires_in", "issued_at"} with a JWT (RS256, x5c header) signed by the test key, which the
registry trusts through its rootcertbundle. Anonymous requests get pull access to repositories
under `public/`; requests with the test user's Basic credentials get pull and push everywhere;
wrong credentials get 401. Standard library only; the signature is made with `openssl dgst`.

usage: token-issuer.py PORT KEY_PEM CERT_PEM USER PASSWORD SERVICE ISSUER
"""

import base64
import json
import os
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

PORT, KEY, CERT, USER, PASSWORD, SERVICE, ISSUER = sys.argv[1:8]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def cert_der_b64() -> str:
    pem = open(CERT).read()
    body = "".join(l for l in pem.splitlines() if l and not l.startswith("-----"))
    return body  # x5c holds standard base64 DER


X5C = cert_der_b64()


def sign(message: bytes) -> bytes:
    out = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", KEY],
        input=message,
        capture_output=True,
        check=True,
    )
    return out.stdout


def token(subject: str, access: list) -> str:
    now = int(time.time())
    header = {"typ": "JWT", "alg": "RS256", "x5c": [X5C]}
    claims = {
        "iss": ISSUER,
        "sub": subject,
        "aud": SERVICE,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": b64url(os.urandom(12)),
        "access": access,
    }
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64url(sign(signing_input.encode()))}"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):  # one line per request on stderr
        sys.stderr.write("token-issuer: " + (fmt % args) + "\n")

    def reply(self, status: int, body: dict):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        """The token request with optional Basic credentials (Docker's client, skopeo)."""
        url = urlparse(self.path)
        if url.path != "/token":
            return self.reply(404, {"errors": [{"code": "NOT_FOUND"}]})
        query = parse_qs(url.query)
        user = None
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            try:
                name, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
            except Exception:
                return self.reply(401, {"errors": [{"code": "UNAUTHORIZED"}]})
            if (name, pw) != (USER, PASSWORD):
                return self.reply(401, {"errors": [{"code": "UNAUTHORIZED"}]})
            user = name
        self.grant(user, query.get("scope", []))

    def do_POST(self):
        """The OAuth2 form (grant_type=password), which containerd uses with credentials."""
        if urlparse(self.path).path != "/token":
            return self.reply(404, {"errors": [{"code": "NOT_FOUND"}]})
        length = int(self.headers.get("Content-Length", "0"))
        form = parse_qs(self.rfile.read(length).decode())
        grant = form.get("grant_type", [""])[0]
        if grant != "password":
            return self.reply(400, {"error": "unsupported_grant_type"})
        name = form.get("username", [""])[0]
        pw = form.get("password", [""])[0]
        if (name, pw) != (USER, PASSWORD):
            return self.reply(401, {"error": "invalid_grant"})
        self.grant(name, form.get("scope", []))

    def grant(self, user, scopes):
        access = []
        for scope in scopes:
            for item in scope.split(" "):
                parts = item.split(":")
                if len(parts) < 3 or parts[0] != "repository":
                    continue
                name, actions = ":".join(parts[1:-1]), parts[-1].split(",")
                if user is not None:
                    granted = [a for a in actions if a in ("pull", "push")]
                elif name.startswith("public/"):
                    granted = [a for a in actions if a == "pull"]
                else:
                    granted = []
                access.append({"type": "repository", "name": name, "actions": granted})
        jwt = token(user or "", access)
        self.reply(
            200,
            {
                "token": jwt,
                "access_token": jwt,
                "expires_in": 300,
                "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        )


ThreadingHTTPServer(("127.0.0.1", int(PORT)), Handler).serve_forever()
