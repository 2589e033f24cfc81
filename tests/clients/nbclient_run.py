"""Runs a small notebook through nbclient with Jupyter Server's gateway kernel manager.

The kernel is started, driven and shut down by `jupyter_server.gateway.managers.GatewayKernelManager`
and its `GatewayKernelClient` (REST on /api/kernels, one websocket on /api/kernels/{id}/channels,
legacy JSON protocol), configured through the `GatewayClient` singleton with the gateway's URL and
token: what `jupyter nbconvert --execute` or papermill do inside a Jupyter Server set up with a
gateway. Checks every cell's outputs (print, expression, display_data, an error cell allowed to
fail, stdout after the error, a cell reading the kernel's environment), then that the gateway
lists no kernel left.

    python nbclient_run.py --gateway-url http://127.0.0.1:8888 [--token T]
        [--kernel-name python3_local] [--timeout 60] [--save OUT.ipynb]

Prints a JSON summary on stdout; exit 0 on success, 1 naming the failed check.
"""

import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import client_cli  # noqa: E402
from kernel_ws import ClientError, Gateway  # noqa: E402

import nbformat  # noqa: E402
from nbclient import NotebookClient  # noqa: E402
from jupyter_server.gateway import managers as gateway_managers  # noqa: E402
from jupyter_server.gateway.gateway_client import GatewayClient  # noqa: E402

CELLS = [
    # (source, check on the cell's outputs)
    ("print('hello from the kernel')",
     lambda o: _streams(o, "stdout") == "hello from the kernel\n"),
    ("x = 6 * 7\nx",
     lambda o: _results(o) == ["42"]),
    ("from IPython.display import display, HTML\ndisplay(HTML('<b>bold</b>'))",
     lambda o: any(out.output_type == "display_data" and out.data.get("text/html") == "<b>bold</b>" for out in o)),
    ("import sys\nfor i in range(3):\n    print(i)\nprint('err', file=sys.stderr)",
     lambda o: _streams(o, "stdout") == "0\n1\n2\n" and _streams(o, "stderr") == "err\n"),
    ("raise ValueError('expected failure')",
     lambda o: any(out.output_type == "error" and out.ename == "ValueError" and out.evalue == "expected failure"
                   for out in o)),
    ("print(x + 1)",  # the kernel survived the error cell and kept its state
     lambda o: _streams(o, "stdout") == "43\n"),
    ("import os\nos.environ.get('KERNEL_USERNAME')",
     lambda o: _results(o) == ["'nbclient-user'"]),
]
ERROR_CELL = 4


def _streams(outputs, name):
    return "".join(o.text for o in outputs if o.output_type == "stream" and o.name == name)


def _results(outputs):
    return [o.data.get("text/plain") for o in outputs if o.output_type == "execute_result"]


def install_token(token):
    """GatewayKernelClient opens its websocket with websocket.create_connection() and no headers
    (Jupyter Server 2.x sends the gateway token only on HTTP requests), so against a gateway with a
    token the websocket would be refused with 401. Add the same Authorization header the HTTP
    requests carry."""
    real = gateway_managers.websocket.create_connection

    def create_connection(url, *a, **kw):
        kw.setdefault("header", [])
        kw["header"] = list(kw["header"]) + [f"Authorization: token {token}"]
        return real(url, *a, **kw)

    gateway_managers.websocket.create_connection = create_connection


async def run_notebook(args, summary):
    gc = GatewayClient.instance()
    gc.url = args.gateway_url
    gc.auth_token = args.token or ""
    gc.request_timeout = float(args.timeout)
    if not gc.gateway_enabled:
        raise ClientError("GatewayClient is not enabled after setting its url")
    if args.token:
        install_token(args.token)
    os.environ["KERNEL_USERNAME"] = "nbclient-user"

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": args.kernel_name, "display_name": args.kernel_name, "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src, _ in CELLS]
    nb.cells[ERROR_CELL].metadata["tags"] = ["raises-exception"]

    # nbclient owns the kernel manager: it starts the kernel (POST), opens the client's websocket,
    # and at the end shuts the kernel down (DELETE) and closes the websocket.
    client = NotebookClient(nb, kernel_manager_class=gateway_managers.GatewayKernelManager,
                            kernel_name=args.kernel_name, timeout=args.timeout,
                            startup_timeout=args.timeout, allow_errors=False,
                            on_notebook_start=lambda notebook: summary.update(kernel_id=client.km.kernel_id))
    t0 = time.monotonic()
    try:
        await client.async_execute()
    except Exception as e:  # noqa: BLE001 (nbclient raises CellExecutionError, TimeoutError, ...)
        raise ClientError(f"nbclient: {type(e).__name__}: {str(e)[:800]}") from e
    summary["execute_s"] = round(time.monotonic() - t0, 3)
    if args.save:
        nbformat.write(nb, args.save)
    failed = []
    for i, ((src, check), cell) in enumerate(zip(CELLS, nb.cells)):
        if not check(cell.outputs):
            failed.append(f"cell {i} {src.splitlines()[0]!r}: outputs {json.dumps(cell.outputs)[:300]}")
    summary["cells"] = len(nb.cells)
    if failed:
        raise ClientError("unexpected outputs: " + "; ".join(failed))


def main():
    p = client_cli.parser(__doc__)
    p.add_argument("--save", default=None, help="write the executed notebook here")
    args = p.parse_args()
    summary = {"gateway": args.gateway_url, "kernel_name": args.kernel_name}
    gw = Gateway(args.gateway_url, args.token, timeout=args.timeout)

    def run():
        before = {k["id"] for k in gw.list_kernels()}
        asyncio.run(run_notebook(args, summary))
        client_cli.wait_kernels_gone(gw, before, "nbclient finished")
        summary["gateway_kernels_after"] = len(gw.list_kernels())

    return client_cli.report("nbclient_run", summary, run)


if __name__ == "__main__":
    rc = main()
    # Should a websocket reader thread of GatewayKernelClient outlive its kernel, do not hang on it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)
