#!/usr/bin/python3
"""In-pod kernel launcher of the FAKE Kubernetes node (tests only).

What a kernel image's entrypoint does, run by the fake node simulator as the pod's process:

1. Reads the pod env the gateway provides: KERNEL_LANGUAGE (must be python), KERNEL_ID,
   RESPONSE_ADDRESS (`ip:port`), PUBLIC_KEY (base64 DER SubjectPublicKeyInfo), PORT_RANGE
   (`lo..hi`, `0..0` = any port; fallback EG_PORT_RANGE), EG_MIN_PORT_RANGE_SIZE /
   MIN_PORT_RANGE_SIZE, EG_MAX_PORT_RANGE_RETRIES / MAX_PORT_RANGE_RETRIES. The pod's own IP
   comes from FAKE_POD_IP (set by the node simulator).
2. Picks five kernel ports and a comm port in the range (random picks, retried), bound on the
   pod IP, writes a connection file (ip = pod IP, key = a fresh UUID4 string) and listens on
   the comm port.
3. Sends the connection info to RESPONSE_ADDRESS, encrypted as Enterprise Gateway's launchers
   do (wire format version 1): AES-128-ECB with PKCS#7 padding under a random key, the key
   encrypted with RSA PKCS#1 v1.5 under PUBLIC_KEY, both base64 in a JSON envelope that is
   itself base64-encoded. Like upstream's launcher it reports "ip": "0.0.0.0", so a gateway has
   to use the pod IP from the pod's status.
4. Starts the kernel: `python3 -m ipykernel_launcher -f <connection file>`, which binds the
   pod IP, in the pod's process group.
5. Serves the comm port: each connection carries one JSON object; {"signum": N} sends signal N
   to the kernel (0 only checks it is alive), {"shutdown": 1} stops the listener.
6. Exits with the kernel's exit status; SIGTERM is passed on to the kernel.

Fault knobs (env): FAKE_LAUNCHER_EXIT=N exits with status N at once; FAKE_LAUNCHER_STALL_RESPONSE=1
connects to the response address and never sends; FAKE_LAUNCHER_STALL_SECONDS=S connects, waits
S seconds, then sends on that connection; FAKE_LAUNCHER_BAD_PAYLOAD=1 sends bytes that do not
decrypt.
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

from Cryptodome.Cipher import AES, PKCS1_v1_5
from Cryptodome.PublicKey import RSA
from Cryptodome.Random import get_random_bytes
from Cryptodome.Util.Padding import pad


def log(msg: str):
    print(f"[kernel-launcher {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def fail(msg: str, code: int = 1):
    log(f"ERROR: {msg}")
    sys.exit(code)


def parse_port_range(text: str, min_size: int) -> tuple[int, int]:
    try:
        lo, hi = (int(p) for p in text.split(".."))
    except ValueError:
        fail(f"Port range validation failed for range: '{text}'")
    if hi - lo != 0 and hi - lo < min_size:
        fail(
            f"Port range validation failed for range: '{text}'.  Range size must be at least "
            f"{min_size} as specified by env EG_MIN_PORT_RANGE_SIZE"
        )
    return lo, hi


def bind_in_range(ip: str, lo: int, hi: int, retries: int) -> socket.socket:
    attempts = 0
    while True:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        port = 0 if hi - lo == 0 else random.randint(lo, hi)
        try:
            sock.bind((ip, port))
            return sock
        except OSError:
            sock.close()
            attempts += 1
            if attempts > retries:
                fail(f"Failed to locate port within range {lo}..{hi} after {retries} retries!")


def encrypt(plaintext: bytes, public_key_b64: str) -> bytes:
    aes_key = get_random_bytes(16)
    conn_info = AES.new(aes_key, AES.MODE_ECB).encrypt(pad(plaintext, 16))
    rsa = RSA.import_key(base64.b64decode(public_key_b64))
    key = PKCS1_v1_5.new(rsa).encrypt(aes_key)
    envelope = {
        "version": 1,
        "key": base64.b64encode(key).decode(),
        "conn_info": base64.b64encode(conn_info).decode(),
    }
    return base64.b64encode(json.dumps(envelope).encode())


def send_payload(address: str, payload: bytes):
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        fail(f"Invalid format for response address '{address}'")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        stall = os.environ.get("FAKE_LAUNCHER_STALL_RESPONSE") == "1"
        stall_seconds = float(os.environ.get("FAKE_LAUNCHER_STALL_SECONDS") or 0)
        if stall:
            log("FAKE_LAUNCHER_STALL_RESPONSE: connected to the response address, sending nothing")
            while True:
                time.sleep(3600)
        if stall_seconds:
            log(f"FAKE_LAUNCHER_STALL_SECONDS: holding the response connection {stall_seconds}s")
            time.sleep(stall_seconds)
        s.sendall(payload)


def die_with_parent():
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def serve_comm(sock: socket.socket, kernel: subprocess.Popen):
    sock.listen(16)
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(5)
            data = b""
            try:
                while chunk := conn.recv(4096):
                    data += chunk
                request = json.loads(data.decode() or "null")
            except (OSError, ValueError) as e:
                log(f"comm port: unreadable request {data!r}: {e}")
                continue
        if not isinstance(request, dict):
            log(f"comm port: ignored {request!r}")
            continue
        if request.get("signum") is not None:
            signum = int(request["signum"])
            if signum != 0:
                log(f"comm port: signal {signum} to the kernel (pid {kernel.pid})")
            try:
                os.kill(kernel.pid, signum)
            except ProcessLookupError:
                log("comm port: the kernel is gone")
        if request.get("shutdown"):
            log("comm port: shutdown requested, listener stops")
            sock.close()
            return


def main():
    if os.environ.get("FAKE_LAUNCHER_EXIT"):
        code = int(os.environ["FAKE_LAUNCHER_EXIT"])
        log(f"FAKE_LAUNCHER_EXIT: exiting with status {code}")
        sys.exit(code)
    if "KERNEL_LANGUAGE" not in os.environ:
        fail("KERNEL_LANGUAGE is required.  Set this value in the image or when starting container.")
    if not all(k in os.environ for k in ("KERNEL_ID", "RESPONSE_ADDRESS", "PUBLIC_KEY")):
        fail("Environment variables, KERNEL_ID, RESPONSE_ADDRESS, and PUBLIC_KEY are required.")
    if os.environ["KERNEL_LANGUAGE"].lower() != "python":
        fail(f"Unrecognized value for KERNEL_LANGUAGE: '{os.environ['KERNEL_LANGUAGE']}'!")
    kernel_id = os.environ["KERNEL_ID"]
    pod_ip = os.environ.get("FAKE_POD_IP", "0.0.0.0")
    port_range = os.environ.get("PORT_RANGE") or os.environ.get("EG_PORT_RANGE") or "0..0"
    min_size = int(os.environ.get("MIN_PORT_RANGE_SIZE", os.environ.get("EG_MIN_PORT_RANGE_SIZE", "1000")))
    retries = int(os.environ.get("MAX_PORT_RANGE_RETRIES", os.environ.get("EG_MAX_PORT_RANGE_RETRIES", "5")))
    lo, hi = parse_port_range(port_range, min_size)

    sockets = [bind_in_range(pod_ip, lo, hi, retries) for _ in range(5)]
    ports = [s.getsockname()[1] for s in sockets]
    comm = bind_in_range(pod_ip, lo, hi, retries)
    comm_port = comm.getsockname()[1]
    key = str(uuid.uuid4())
    conn = {
        "shell_port": ports[0],
        "iopub_port": ports[1],
        "stdin_port": ports[2],
        "hb_port": ports[3],
        "control_port": ports[4],
        "ip": pod_ip,
        "key": key,
        "transport": "tcp",
        "signature_scheme": "hmac-sha256",
        "kernel_name": "",
    }
    directory = os.environ.get("FAKE_POD_DIR") or tempfile.gettempdir()
    fd, conn_file = tempfile.mkstemp(prefix=f"kernel-{kernel_id}_", suffix=".json", dir=directory)
    with os.fdopen(fd, "w") as f:
        json.dump(conn, f)
    log(f"kernel {kernel_id}: ports {ports}, comm port {comm_port} on {pod_ip}, range {port_range}")

    comm.listen(16)
    report = dict(
        conn, ip="0.0.0.0", pid=os.getpid(), pgid=os.getpgid(0), comm_port=comm_port, kernel_id=kernel_id
    )
    if os.environ.get("FAKE_LAUNCHER_BAD_PAYLOAD") == "1":
        payload = base64.b64encode(
            b'{"version": 1, "key": "bm90IGEga2V5", "conn_info": "bm90IGEgcGF5bG9hZA=="}'
        )
    else:
        payload = encrypt(json.dumps(report).encode(), os.environ["PUBLIC_KEY"])
    try:
        send_payload(os.environ["RESPONSE_ADDRESS"], payload)
    except OSError as e:
        fail(f"could not send the connection info to {os.environ['RESPONSE_ADDRESS']}: {e}")
    log(f"connection info sent to {os.environ['RESPONSE_ADDRESS']}")

    for s in sockets:  # the kernel binds them next
        s.close()
    env = dict(os.environ, JPY_PARENT_PID=str(os.getpid()))
    kernel = subprocess.Popen(
        [sys.executable, "-m", "ipykernel_launcher", "-f", conn_file], env=env, preexec_fn=die_with_parent
    )
    signal.signal(signal.SIGTERM, lambda *_: kernel.send_signal(signal.SIGTERM))
    threading.Thread(target=serve_comm, args=(comm, kernel), daemon=True).start()
    code = kernel.wait()
    log(f"kernel exited with status {code}")
    sys.exit(128 - code if code < 0 else code)


if __name__ == "__main__":
    main()
