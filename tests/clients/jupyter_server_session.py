"""JupyterLab's path through a real Jupyter Server 2.x configured with a gateway.

Starts `jupyter server --gateway-url=URL` (its own temporary root, config, data and runtime
directories, its own token, a free 127.0.0.1 port, no browser), then as JupyterLab does:
POST /api/sessions on Jupyter Server (which starts a kernel on the gateway), the kernel websocket
/api/kernels/{id}/channels on Jupyter Server (which bridges it to the gateway's), an executed cell
(`print(6*7)` then `6*7`: a stream and an execute_result), DELETE the session; then checks that the
gateway lists no kernel and stops Jupyter Server with SIGTERM.

    python jupyter_server_session.py --gateway-url http://127.0.0.1:8888 [--token T]
        [--kernel-name python3_local] [--timeout 60] [--keep-log]

Prints a JSON summary on stdout; exit 0 on success, 1 naming the failed step (Jupyter Server's log
tail goes to stderr).
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import client_cli  # noqa: E402
from kernel_ws import ClientError, Gateway, KernelSocket  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterServer:
    """A Jupyter Server 2.x process using a gateway, in its own temporary directory."""

    def __init__(self, gateway_url, gateway_token=None, timeout=60):
        self.dir = tempfile.mkdtemp(prefix="jupyter-server-session.")
        self.port = free_port()
        self.token = uuid.uuid4().hex
        self.url = f"http://127.0.0.1:{self.port}"
        root = os.path.join(self.dir, "root")
        os.makedirs(root)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "KERNEL_"))}
        env.update(HOME=self.dir, JUPYTER_CONFIG_DIR=os.path.join(self.dir, "config"),
                   JUPYTER_DATA_DIR=os.path.join(self.dir, "data"),
                   JUPYTER_RUNTIME_DIR=os.path.join(self.dir, "runtime"),
                   KERNEL_USERNAME="kernel-clients")
        cmd = [sys.executable, "-m", "jupyter_server",
               f"--gateway-url={gateway_url}",
               f"--GatewayClient.auth_token={gateway_token or ''}",
               f"--GatewayClient.request_timeout={float(timeout)}",
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
               f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False",
               "--ServerApp.allow_root=True", f"--IdentityProvider.token={self.token}"]
        self.log_path = os.path.join(self.dir, "jupyter-server.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     cwd=root, start_new_session=True)
        self.api = Gateway(self.url, self.token, timeout=timeout)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise ClientError(f"jupyter server exited with {self.proc.returncode} while starting")
            try:
                self.api.request("GET", "/api/status")
                break
            except ClientError:
                if time.monotonic() > deadline:
                    raise ClientError("jupyter server did not answer /api/status within 30s") from None
                time.sleep(0.2)

    def log_tail(self, n=40):
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode(errors="replace")
        except OSError:
            return ""

    def stop(self):
        """SIGTERM, then SIGKILL (its process group) after 10 s. Returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def cleanup(self, keep_log=False):
        self.stop()
        if keep_log:
            print(f"jupyter_server_session: Jupyter Server's log kept in {self.log_path}", file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def run(args, summary):
    gw = Gateway(args.gateway_url, args.token, timeout=args.timeout)
    before = {k["id"] for k in gw.list_kernels()}
    t0 = time.monotonic()
    js = JupyterServer(args.gateway_url, args.token, timeout=args.timeout)
    summary["jupyter_server_start_s"] = round(time.monotonic() - t0, 3)
    try:
        _, specs, _ = js.api.request("GET", "/api/kernelspecs")
        if args.kernel_name not in specs.get("kernelspecs", {}):
            raise ClientError(f"Jupyter Server's /api/kernelspecs (from the gateway) lacks {args.kernel_name!r}: "
                              f"{sorted(specs.get('kernelspecs', {}))}")
        t0 = time.monotonic()
        _, sess, _ = js.api.request("POST", "/api/sessions", {
            "path": "kernel-clients.ipynb", "name": "kernel-clients.ipynb", "type": "notebook",
            "kernel": {"name": args.kernel_name}}, expect=(201,))
        summary["session_post_s"] = round(time.monotonic() - t0, 3)
        kid = sess["kernel"]["id"]
        summary["kernel_id"] = kid
        on_gateway = {k["id"]: k for k in gw.list_kernels()}
        if kid not in on_gateway:
            raise ClientError(f"kernel {kid} of the new session is not in the gateway's GET /api/kernels")
        if on_gateway[kid]["name"] != args.kernel_name:
            raise ClientError(f"gateway kernel {kid} is {on_gateway[kid]['name']!r}, expected {args.kernel_name!r}")

        ks = KernelSocket(js.url, kid, js.token, session_id=uuid.uuid4().hex, timeout=args.timeout)
        try:
            info = ks.kernel_info(timeout=args.timeout)
            summary["kernel_info_s"] = round(time.monotonic() - t0, 3)
            lang = info["content"].get("language_info", {}).get("name")
            if lang != "python":
                raise ClientError(f"kernel_info_reply through Jupyter Server: language {lang!r}")
            res = ks.execute("print(6*7)\n6*7", timeout=args.timeout)
            streams = "".join(o["content"]["text"] for o in res["outputs"] if o["msg_type"] == "stream")
            results = [o["content"]["data"].get("text/plain") for o in res["outputs"] if o["msg_type"] == "execute_result"]
            summary["execute_reply"] = res["reply"].get("status")
            summary["stream"] = streams
            summary["execute_result"] = results
            if res["reply"].get("status") != "ok":
                raise ClientError(f"execute_reply status {res['reply'].get('status')}: {res['reply']}")
            if streams != "42\n":
                raise ClientError(f"stream output {streams!r}, expected '42\\n'")
            if results != ["42"]:
                raise ClientError(f"execute_result {results!r}, expected ['42']")
        finally:
            ks.close()

        js.api.request("DELETE", f"/api/sessions/{sess['id']}", expect=(204,))
        _, left, _ = js.api.request("GET", "/api/sessions")
        if left:
            raise ClientError(f"Jupyter Server still lists sessions after DELETE: {left}")
        # The gateway's DELETE is synchronous in Jupyter Server's session DELETE; allow a moment.
        client_cli.wait_kernels_gone(gw, before, "the session was deleted")
    except ClientError:
        tail = js.log_tail()
        js.cleanup(keep_log=True)
        print(f"--- Jupyter Server log (tail) ---\n{tail}", file=sys.stderr)
        raise
    rc = js.stop()
    summary["jupyter_server_exit"] = rc
    if rc not in (0, -signal.SIGTERM):
        js.cleanup(keep_log=True)
        raise ClientError(f"Jupyter Server exited with {rc} on SIGTERM")
    js.cleanup(keep_log=args.keep_log)
    if gw.list_kernels() != [] and not before:
        raise ClientError(f"the gateway lists kernels after Jupyter Server stopped: {gw.list_kernels()}")
    summary["gateway_kernels_after"] = len(gw.list_kernels())


def main():
    p = client_cli.parser(__doc__)
    p.add_argument("--keep-log", action="store_true", help="keep Jupyter Server's log and directory")
    args = p.parse_args()
    summary = {"gateway": args.gateway_url, "kernel_name": args.kernel_name}
    return client_cli.report("jupyter_server_session", summary, lambda: run(args, summary))


if __name__ == "__main__":
    sys.exit(main())
