"""Harness of the fake Kubernetes API server's own tests: starts apiserver.py (with this venv's
python, which has kubernetes-validate) and talks to it over HTTP like a client would."""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

HERE = Path(__file__).resolve().parent
TOKEN = "fake-token-for-tests"
SYSTEM_PYTHON = "/usr/bin/python3"
EG_VENV = Path(os.environ.get("KIP_TEST_EG_VENV", "/opt/kip-test/eg-venv"))
EG_SRC = Path(os.environ.get("KIP_TEST_EG_SRC", "/opt/kip-test/eg-src")) / "jupyter_enterprise_gateway-3.3.0"

# The pods run Debian's python3 with python3-pycryptodome and python3-ipykernel (installed by
# tests/scripts/install-deps.sh); the tests decrypt and talk to kernels with those same
# packages. This venv was made from that python (same version), so its dist-packages load here;
# appended, so the venv's own packages come first.
_DIST = "/usr/lib/python3/dist-packages"
if _DIST not in sys.path and sys.base_prefix == "/usr":
    sys.path.append(_DIST)


def require(condition: bool, what: str):
    """A missing component fails the test under CI=true and skips it elsewhere."""
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is missing (tests/scripts/install-deps.sh installs it)")
    pytest.skip(f"{what} is missing (tests/scripts/install-deps.sh installs it)")


IMAGES = [
    {"suffix": "kernel-py-upstream", "run": "upstream"},
    {"suffix": "kernel-py", "run": "launcher"},
    {"image": "busybox:1.36", "run": "sleep"},
]


class Fake:
    """A running fake API server and a small JSON client for it."""

    def __init__(self, tmp: Path, extra_args=()):
        self.dir = tmp
        self.kubeconfig = tmp / "kubeconfig"
        images = tmp / "images.json"
        images.write_text(json.dumps(IMAGES))
        self.log = open(tmp / "apiserver.log", "w")
        self.proc = subprocess.Popen(
            [
                sys.executable, str(HERE / "apiserver.py"), "--port", "0", "--token", TOKEN,
                "--state-dir", str(tmp / "state"), "--images", str(images),
                "--kubeconfig-out", str(self.kubeconfig), "--image-backoff", "1",
                "--bookmark-interval", "0.5", *extra_args,
            ],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )  # fmt: skip
        self.url = self.proc.stdout.readline().strip()
        assert self.url.startswith("http://127.0.0.1:"), f"apiserver did not start: {self.logs()}"
        u = urlsplit(self.url)
        self.host, self.port = u.hostname, u.port

    def logs(self) -> str:
        self.log.flush()
        return (self.dir / "apiserver.log").read_text()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()

    def request(self, method: str, path: str, body=None, token: str | None = TOKEN, headers=None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        h = {"Accept": "application/json"}
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        conn.request(method, path, body=data, headers=h)
        resp = conn.getresponse()
        raw = resp.read()
        conn.close()
        ctype = resp.getheader("Content-Type", "")
        return resp.status, (json.loads(raw) if ctype.startswith("application/json") else raw.decode())

    def ok(self, method, path, body=None, expect=(200, 201)):
        status, obj = self.request(method, path, body)
        assert status in expect, f"{method} {path} -> {status}: {obj}"
        return obj

    def watch(self, path: str, timeout: float = 15):
        """Yields the events of a watch stream (JSON lines), until the server ends it."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        try:
            while True:
                line = resp.readline()
                if not line:
                    return
                yield json.loads(line)
        finally:
            conn.close()

    def wait_pod(self, ns: str, name: str, pred, timeout: float = 20) -> dict:
        deadline = time.monotonic() + timeout
        pod = None
        while time.monotonic() < deadline:
            status, pod = self.request("GET", f"/api/v1/namespaces/{ns}/pods/{name}")
            if status == 200 and pred(pod):
                return pod
            time.sleep(0.05)
        raise AssertionError(f"pod {ns}/{name} never matched; last: {json.dumps(pod, indent=1)}")

    def namespace(self, name: str):
        self.ok(
            "POST",
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )
        return name


@pytest.fixture(scope="session")
def fake(tmp_path_factory):
    f = Fake(tmp_path_factory.mktemp("fake-k8s"))
    yield f
    f.stop()


@pytest.fixture(autouse=True)
def no_faults(request):
    if "fake" in request.fixturenames:
        request.getfixturevalue("fake").request("DELETE", "/fake/faults")
    yield


class ResponseListener:
    """The gateway's side of the handshake: an RSA key pair and a TCP listener that keeps every
    payload it receives (each connection read to EOF)."""

    def __init__(self):
        require(_importable("Cryptodome"), "python3-pycryptodome (module Cryptodome)")
        from Cryptodome.PublicKey import RSA

        self.key = RSA.generate(1024)
        self.public_key = base64.b64encode(self.key.publickey().export_key("DER")).decode()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.payloads: list[bytes] = []
        self.connections = 0
        self.cond = threading.Condition()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.cond:
                self.connections += 1
                self.cond.notify_all()
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn):
        data = b""
        with conn:
            while chunk := conn.recv(65536):
                data += chunk
        with self.cond:
            self.payloads.append(data)
            self.cond.notify_all()

    def wait_payload(self, timeout: float = 30) -> bytes:
        with self.cond:
            assert self.cond.wait_for(lambda: self.payloads, timeout), "no connection info arrived"
            return self.payloads.pop(0)

    def decrypt(self, payload: bytes) -> dict:
        """Enterprise Gateway's decoder for wire format version 1."""
        from Cryptodome.Cipher import AES, PKCS1_v1_5
        from Cryptodome.Util.Padding import unpad

        envelope = json.loads(base64.b64decode(payload))
        assert envelope["version"] == 1, envelope
        aes_key = PKCS1_v1_5.new(self.key).decrypt(base64.b64decode(envelope["key"]), None)
        assert aes_key is not None and len(aes_key) == 16, "the AES key does not decrypt"
        plain = unpad(AES.new(aes_key, AES.MODE_ECB).decrypt(base64.b64decode(envelope["conn_info"])), 16)
        return json.loads(plain)

    def close(self):
        self.sock.close()


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.fixture
def listener():
    li = ResponseListener()
    yield li
    li.close()
