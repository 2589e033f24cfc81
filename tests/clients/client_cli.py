"""What the gateway client scripts share: their command line, the wait for the gateway to drop
the kernels a client started, and the JSON summary they end with."""

import argparse
import json
import sys
import time

from kernel_ws import ClientError


def parser(doc):
    """The options every client takes: --gateway-url, --token, --kernel-name, --timeout."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--gateway-url", required=True)
    p.add_argument("--token", default=None, help="the gateway's token (EG_AUTH_TOKEN)")
    p.add_argument("--kernel-name", default="python3_local")
    p.add_argument("--timeout", type=float, default=60)
    return p


def wait_kernels_gone(gw, before, after, timeout=10):
    """Waits until `gw` lists no kernel but those in `before` (ids); raises ClientError naming
    the ones left, and `after` (what should have ended them), after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        left = [k for k in gw.list_kernels() if k["id"] not in before]
        if not left:
            return
        if time.monotonic() > deadline:
            raise ClientError(f"the gateway still lists kernels after {after}: {left}")
        time.sleep(0.2)


def report(name, summary, run):
    """Calls `run()`, then prints `summary` as JSON with ok (and error) set; a ClientError is also
    printed on stderr. Returns the exit code: 0 on success, 1 on a ClientError."""
    try:
        run()
    except ClientError as e:
        print(f"{name}: FAILED: {e}", file=sys.stderr)
        summary.update(ok=False, error=str(e))
        print(json.dumps(summary))
        return 1
    summary["ok"] = True
    print(json.dumps(summary))
    return 0
