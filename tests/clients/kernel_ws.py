"""A minimal Jupyter kernel client for a gateway: REST calls on /api/kernels and one websocket on
/api/kernels/{id}/channels, in the legacy JSON protocol (no subprotocol, what Jupyter Server's
gateway client speaks) or in `v1.kernel.websocket.jupyter.org` (binary frames).

Standard library plus websocket-client only. The websocket's TCP socket has TCP_NODELAY set.

    python kernel_ws.py --gateway-url http://127.0.0.1:8888 [--token T] [--kernel-name N]
                        [--protocol legacy|v1]

runs a smoke test as a CLI: start a kernel, kernel_info, execute `print(6*7)` and `6*7`, interrupt,
restart, delete; prints a JSON summary and exits 0, or 1 naming what failed.
"""

import argparse
import datetime
import json
import socket
import struct
import sys
import time
import urllib.error
import urllib.request
import uuid

import websocket

V1_PROTOCOL = "v1.kernel.websocket.jupyter.org"


class ClientError(Exception):
    """A failed step, with a message naming it."""


class Gateway:
    """REST side of a gateway (or of a Jupyter Server: same /api/kernels and /api/sessions)."""

    def __init__(self, url, token=None, timeout=60):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def headers(self):
        h = {"Content-Type": "application/json"}
        if self.token:
            h["Authorization"] = f"token {self.token}"
        return h

    def request(self, method, path, body=None, expect=(200,), timeout=None):
        """Returns (status, decoded JSON or None, headers); raises ClientError on another status."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=self.headers())
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                status, raw, headers = resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as e:
            status, raw, headers = e.code, e.read(), e.headers
        except (urllib.error.URLError, OSError) as e:
            raise ClientError(f"{method} {self.url}{path}: {e}") from e
        if status not in expect:
            raise ClientError(f"{method} {self.url}{path}: status {status}, expected {expect}: {raw[:500]!r}")
        try:
            payload = json.loads(raw) if raw else None
        except ValueError as e:
            raise ClientError(f"{method} {self.url}{path}: body is not JSON: {raw[:200]!r}") from e
        return status, payload, headers

    def start_kernel(self, name, env=None, timeout=None):
        body = {"name": name, "env": env if env is not None else {"KERNEL_USERNAME": "kernel-clients"}}
        _, model, headers = self.request("POST", "/api/kernels", body, expect=(201,), timeout=timeout)
        if not isinstance(model, dict) or "id" not in model:
            raise ClientError(f"POST /api/kernels: no kernel model in the answer: {model!r}")
        loc = headers.get("Location", "")
        if not loc.endswith(f"/api/kernels/{model['id']}"):
            raise ClientError(f"POST /api/kernels: Location {loc!r} does not name kernel {model['id']}")
        return model

    def kernel(self, kernel_id):
        return self.request("GET", f"/api/kernels/{kernel_id}")[1]

    def list_kernels(self):
        return self.request("GET", "/api/kernels")[1]

    def delete_kernel(self, kernel_id, timeout=None):
        self.request("DELETE", f"/api/kernels/{kernel_id}", expect=(204,), timeout=timeout)

    def interrupt_kernel(self, kernel_id):
        self.request("POST", f"/api/kernels/{kernel_id}/interrupt", {}, expect=(204,))

    def restart_kernel(self, kernel_id):
        return self.request("POST", f"/api/kernels/{kernel_id}/restart", {}, expect=(200,))[1]

    def delete_all_kernels(self):
        """Deletes every listed kernel; returns how many. Errors are swallowed (used in cleanups)."""
        n = 0
        try:
            for k in self.list_kernels() or []:
                try:
                    self.delete_kernel(k["id"])
                    n += 1
                except ClientError:
                    pass
        except ClientError:
            pass
        return n


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def encode_v1(channel, msg):
    parts = [json.dumps(msg.get(k, {})).encode() for k in ("header", "parent_header", "metadata", "content")]
    parts += [bytes(b) for b in msg.get("buffers", [])]
    n = 2 + len(parts)
    offsets = [8 * (n + 1)]
    body = channel.encode()
    offsets.append(offsets[0] + len(body))
    for p in parts:
        body += p
        offsets.append(offsets[0] + len(body))
    return struct.pack(f"<{n + 1}Q", n, *offsets) + body


def decode_v1(frame):
    (n,) = struct.unpack_from("<Q", frame, 0)
    offsets = struct.unpack_from(f"<{n}Q", frame, 8)
    channel = frame[offsets[0]:offsets[1]].decode()
    parts = [frame[offsets[i]:offsets[i + 1]] for i in range(1, n - 1)]
    if len(parts) < 4:
        raise ClientError(f"v1 frame with {len(parts)} parts")
    header, parent, metadata, content = (json.loads(p) if p else {} for p in parts[:4])
    return {"channel": channel, "header": header, "parent_header": parent, "metadata": metadata,
            "content": content, "buffers": parts[4:], "msg_type": header.get("msg_type"),
            "msg_id": header.get("msg_id")}


def decode_legacy_binary(frame):
    (n,) = struct.unpack_from(">I", frame, 0)
    offsets = list(struct.unpack_from(f">{n}I", frame, 4)) + [len(frame)]
    msg = json.loads(frame[offsets[0]:offsets[1]])
    msg["buffers"] = [frame[offsets[i]:offsets[i + 1]] for i in range(1, n)]
    return msg


class KernelSocket:
    """One websocket on a kernel's channels."""

    def __init__(self, gateway_url, kernel_id, token=None, protocol="legacy", session_id=None, timeout=60):
        self.kernel_id = kernel_id
        self.session = session_id or uuid.uuid4().hex
        self.protocol = protocol
        ws_url = gateway_url.rstrip("/").replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        ws_url += f"/api/kernels/{kernel_id}/channels?session_id={self.session}"
        header = [f"Authorization: token {token}"] if token else []
        kwargs = {"subprotocols": [V1_PROTOCOL]} if protocol == "v1" else {}
        try:
            self.ws = websocket.create_connection(
                ws_url, header=header, timeout=timeout, enable_multithread=False, skip_utf8_validation=True,
                sockopt=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),), **kwargs)
        except (websocket.WebSocketException, OSError) as e:
            raise ClientError(f"websocket {ws_url}: {e}") from e
        if protocol == "v1":
            got = self.ws.getsubprotocol()
            if got != V1_PROTOCOL:
                raise ClientError(f"websocket {ws_url}: subprotocol {got!r} selected, expected {V1_PROTOCOL}")

    def close(self):
        try:
            self.ws.close(timeout=2)
        except Exception:  # noqa: BLE001 (closing a broken socket)
            pass

    def send(self, channel, msg_type, content, metadata=None):
        msg_id = uuid.uuid4().hex
        msg = {"header": {"msg_id": msg_id, "msg_type": msg_type, "username": "kernel-clients",
                          "session": self.session, "date": _now(), "version": "5.3"},
               "parent_header": {}, "metadata": metadata or {}, "content": content, "buffers": []}
        if self.protocol == "v1":
            self.ws.send_binary(encode_v1(channel, msg))
        else:
            msg["channel"] = channel
            self.ws.send(json.dumps(msg))
        return msg_id

    def recv(self, deadline):
        """Next message as a dict with channel/header/msg_type/parent_header/content, or ClientError
        when the deadline (time.monotonic()) passes or the socket closes."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise ClientError("timed out waiting for a kernel message")
        self.ws.settimeout(left)
        try:
            opcode, data = self.ws.recv_data()
        except websocket.WebSocketTimeoutException as e:
            raise ClientError("timed out waiting for a kernel message") from e
        except (websocket.WebSocketException, OSError) as e:
            raise ClientError(f"websocket closed: {e}") from e
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            raise ClientError("websocket closed by the server")
        if self.protocol == "v1":
            if opcode != websocket.ABNF.OPCODE_BINARY:
                raise ClientError(f"v1 protocol: text frame from the server: {data[:200]!r}")
            return decode_v1(data)
        if opcode == websocket.ABNF.OPCODE_BINARY:
            return decode_legacy_binary(data)
        return json.loads(data)

    def wait_reply(self, msg_id, reply_type, timeout=30, on_other=None):
        """Reads until the reply to msg_id of reply_type; other messages go to on_other."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self.recv(deadline)
            except ClientError as e:
                raise ClientError(f"{reply_type} to {msg_id}: {e}") from e
            if msg.get("parent_header", {}).get("msg_id") == msg_id and msg["header"]["msg_type"] == reply_type:
                return msg
            if on_other:
                on_other(msg)

    def kernel_info(self, timeout=60):
        """Sends kernel_info_request until a reply comes (a kernel may drop the first while it starts)."""
        deadline = time.monotonic() + timeout
        while True:
            msg_id = self.send("shell", "kernel_info_request", {})
            try:
                return self.wait_reply(msg_id, "kernel_info_reply", timeout=min(5, max(0.1, deadline - time.monotonic())))
            except ClientError:
                if time.monotonic() >= deadline:
                    raise ClientError(f"no kernel_info_reply from kernel {self.kernel_id} within {timeout}s")

    def execute(self, code, timeout=60, stream_sink=None, idle_grace=None):
        """Executes code; returns {"reply": content, "outputs": [...], "rtt": seconds from send to
        execute_reply, "idle": bool}. Reads until the kernel's status idle for the request.
        stream_sink, when given, is called with each stream message's text instead of keeping it in
        outputs. idle_grace: once the reply is in, stop after that many seconds without a message
        even if no idle status came (a gateway that drops messages under load)."""
        deadline = time.monotonic() + timeout
        t0 = time.perf_counter()
        msg_id = self.send("shell", "execute_request", {
            "code": code, "silent": False, "store_history": False, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": True})
        reply = rtt = None
        idle = False
        outputs = []
        while reply is None or not idle:
            try:
                msg = self.recv(deadline if reply is None or idle_grace is None
                                else min(deadline, time.monotonic() + idle_grace))
            except ClientError as e:
                if reply is not None and idle_grace is not None and "timed out" in str(e):
                    break
                raise ClientError(f"execute {code[:40]!r}: {e} (reply={'yes' if reply else 'no'}, idle={idle})") from e
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            mt = msg["header"]["msg_type"]
            if mt == "execute_reply":
                rtt = time.perf_counter() - t0
                reply = msg["content"]
            elif mt == "status":
                idle = msg["content"].get("execution_state") == "idle"
            elif mt == "stream" and stream_sink is not None:
                stream_sink(msg["content"]["text"])
            elif mt in ("stream", "execute_result", "display_data", "error"):
                outputs.append({"msg_type": mt, "content": msg["content"]})
        return {"reply": reply, "outputs": outputs, "rtt": rtt, "idle": idle}


def smoke(args):
    gw = Gateway(args.gateway_url, args.token)
    summary = {"gateway": args.gateway_url, "protocol": args.protocol}
    t0 = time.monotonic()
    model = gw.start_kernel(args.kernel_name)
    kid = model["id"]
    summary["kernel_id"] = kid
    summary["post_s"] = round(time.monotonic() - t0, 3)
    try:
        for field in ("id", "name", "last_activity", "execution_state", "connections"):
            if field not in model:
                raise ClientError(f"kernel model lacks {field!r}: {model}")
        if model["name"] != args.kernel_name:
            raise ClientError(f"kernel model name {model['name']!r}, expected {args.kernel_name!r}")
        ks = KernelSocket(args.gateway_url, kid, args.token, args.protocol)
        try:
            info = ks.kernel_info()
            summary["kernel_info_s"] = round(time.monotonic() - t0, 3)
            summary["language"] = info["content"].get("language_info", {}).get("name")
            if summary["language"] != "python":
                raise ClientError(f"kernel_info_reply language {summary['language']!r}, expected python")
            res = ks.execute("print(6*7)\n6*7")
            streams = "".join(o["content"]["text"] for o in res["outputs"] if o["msg_type"] == "stream")
            results = [o["content"]["data"]["text/plain"] for o in res["outputs"] if o["msg_type"] == "execute_result"]
            if res["reply"].get("status") != "ok" or streams != "42\n" or results != ["42"]:
                raise ClientError(f"execute print(6*7); 6*7: reply {res['reply'].get('status')}, "
                                  f"stream {streams!r}, results {results!r}")
            conns = gw.kernel(kid).get("connections")
            if conns != 1:
                raise ClientError(f"GET /api/kernels/{kid}: connections {conns}, expected 1 with one websocket open")
        finally:
            ks.close()
        gw.interrupt_kernel(kid)
        restarted = gw.restart_kernel(kid)
        if restarted.get("id") != kid:
            raise ClientError(f"restart answered a model for {restarted.get('id')}, expected {kid}")
        ks = KernelSocket(args.gateway_url, kid, args.token, args.protocol)
        try:
            ks.kernel_info()
            res = ks.execute("'x' in dir()")  # a fresh interpreter after the restart
            results = [o["content"]["data"]["text/plain"] for o in res["outputs"] if o["msg_type"] == "execute_result"]
            if results != ["False"]:
                raise ClientError(f"after restart: results {results!r}")
        finally:
            ks.close()
    finally:
        try:
            gw.delete_kernel(kid)
        except ClientError as e:
            summary["delete_error"] = str(e)
    if "delete_error" in summary:
        raise ClientError(summary["delete_error"])
    try:
        gw.kernel(kid)
        raise ClientError(f"GET /api/kernels/{kid} still answers after DELETE")
    except ClientError as e:
        if "status 404" not in str(e):
            raise
    summary["ok"] = True
    return summary


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gateway-url", required=True)
    p.add_argument("--token", default=None)
    p.add_argument("--kernel-name", default="python3_local")
    p.add_argument("--protocol", choices=("legacy", "v1"), default="legacy")
    args = p.parse_args()
    try:
        summary = smoke(args)
    except ClientError as e:
        print(f"kernel_ws: FAILED: {e}", file=sys.stderr)
        print(json.dumps({"ok": False, "error": str(e)}))
        return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
