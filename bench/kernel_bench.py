"""Kernel benchmark, one side at a time (run by bench/kernel-bench.sh with the kernel-client venv).

    kernel_bench.py gateway --name NAME --gateway-url URL --pid PID [--token T] --out FILE.json
    kernel_bench.py direct  --name direct --out FILE.json        # jupyter_client + ZeroMQ, no gateway
    kernel_bench.py report  FILE.json...                          # table, ratios, markdown

A gateway side drives the gateway's REST API and websocket (legacy JSON protocol, TCP_NODELAY) with
tests/clients/kernel_ws.py and reads the gateway's CPU (utime+stime of /proc/PID/stat) and RSS
(VmRSS) for PID only (not its kernels). The direct side does the same work with jupyter_client's
KernelManager and BlockingKernelClient on the kernel's ZeroMQ sockets: the floor.

Knobs (environment): KERNEL=python3_local, N=500 round trips, FLOOD_MIB=50 (lines of 100 bytes,
flushed every FLOOD_CHUNK=80 lines: one stream message each), CONC=8 kernels, DURATION=10 s for the
concurrent clients, IDLE_KERNELS=20, TIMEOUT=120 s for any single wait.
"""

import json
import multiprocessing
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "clients"))
from benchlib import cpu_s, knobs, pct, rss_mib  # noqa: E402
from kernel_ws import ClientError, Gateway, KernelSocket  # noqa: E402

KERNEL, N, FLOOD_MIB, FLOOD_CHUNK, CONC, DURATION, IDLE_KERNELS, TIMEOUT = knobs(
    KERNEL="python3_local", N=500, FLOOD_MIB=50.0, FLOOD_CHUNK=80, CONC=8, DURATION=10.0, IDLE_KERNELS=20,
    TIMEOUT=120.0)
LINE = 100  # bytes per flood line, newline included
FLOOD_LINES = int(FLOOD_MIB * 1024 * 1024 // LINE)
FLOOD_CODE = (f"import sys\nline = 'x' * {LINE - 1} + '\\n'\nw = sys.stdout.write\nf = sys.stdout.flush\n"
              f"for i in range({FLOOD_LINES}):\n    w(line)\n    if i % {FLOOD_CHUNK} == {FLOOD_CHUNK - 1}:\n"
              f"        f()\nf()\n")


class FloodCounter:
    def __init__(self):
        self.bytes = self.lines = self.msgs = 0

    def __call__(self, text):
        self.msgs += 1
        self.bytes += len(text)
        self.lines += text.count("\n")


def flood_figures(counter, secs, cpu=None):
    out = {"flood_mib": round(counter.bytes / 1048576, 2), "flood_s": round(secs, 3),
           "flood_mb_s": round(counter.bytes / 1e6 / secs, 1), "flood_msgs": counter.msgs,
           "flood_msgs_s": round(counter.msgs / secs), "flood_lines_lost": FLOOD_LINES - counter.lines,
           "flood_bytes_lost": FLOOD_LINES * LINE - counter.bytes}
    if cpu is not None:
        out["flood_cpu_ms_per_mib"] = round(cpu * 1000 / (counter.bytes / 1048576), 2)
    return out


# ---------------------------------------------------------------------------------------- gateway

class GatewaySide:
    def __init__(self, url, token, pid):
        self.url, self.token, self.pid = url, token, pid
        self.gw = Gateway(url, token, timeout=TIMEOUT)

    def start(self):
        """(kernel id, seconds to 201, seconds to kernel_info_reply, open KernelSocket)"""
        t0 = time.perf_counter()
        kid = self.gw.start_kernel(KERNEL, timeout=TIMEOUT)["id"]
        t1 = time.perf_counter()
        ks = KernelSocket(self.url, kid, self.token, timeout=TIMEOUT)
        ks.kernel_info(timeout=TIMEOUT)
        return kid, t1 - t0, time.perf_counter() - t0, ks

    def run(self, res):
        res["rss_idle_mib"] = round(rss_mib(self.pid), 1)
        kid, t201, tinfo, ks = self.start()
        res["start_201_ms"] = round(t201 * 1000, 1)
        res["start_info_ms"] = round(tinfo * 1000, 1)
        try:
            for _ in range(20):
                ks.execute("1+1", timeout=TIMEOUT)
            c0 = cpu_s(self.pid)
            rtts = [ks.execute("1+1", timeout=TIMEOUT)["rtt"] for _ in range(N)]
            c1 = cpu_s(self.pid)
            res.update(rtt_median_us=round(statistics.median(rtts) * 1e6), rtt_p99_us=round(pct(rtts, 99) * 1e6),
                       cpu_us_per_execute=round((c1 - c0) * 1e6 / N))
            counter = FloodCounter()
            c0, t0 = cpu_s(self.pid), time.perf_counter()
            r = ks.execute(FLOOD_CODE, timeout=max(TIMEOUT, 600), stream_sink=counter, idle_grace=5)
            secs, c1 = time.perf_counter() - t0, cpu_s(self.pid)
            if not r["idle"]:
                secs -= 5  # the grace waited for nothing
            res.update(flood_figures(counter, secs, c1 - c0))
            res["flood_idle_received"] = r["idle"]
        finally:
            ks.close()
            self.gw.delete_kernel(kid, timeout=TIMEOUT)

        # CONC concurrent starts, then CONC clients on those kernels.
        def start_one():
            kid, _, _, ks = self.start()
            ks.close()
            return kid
        kids = concurrent_starts(start_one, res)
        try:
            res["conc_rt_per_s"] = concurrent_clients(
                [("gateway", self.url, self.token, k) for k in kids], res)
        finally:
            for k in kids:
                self.gw.delete_kernel(k, timeout=TIMEOUT)

        # IDLE_KERNELS idle kernels: started and answered kernel_info once, no websocket left open.
        kids = []
        try:
            for _ in range(IDLE_KERNELS):
                kid, _, _, ks = self.start()
                ks.close()
                kids.append(kid)
            time.sleep(2)
            res["rss_idle_kernels_mib"] = round(rss_mib(self.pid), 1)
        finally:
            for k in kids:
                self.gw.delete_kernel(k, timeout=TIMEOUT)
        left = self.gw.list_kernels()
        if left:
            raise ClientError(f"the gateway still lists {len(left)} kernels after the bench deleted them")


# ----------------------------------------------------------------------------------------- direct

def direct_start():
    from jupyter_client.manager import KernelManager
    t0 = time.perf_counter()
    km = KernelManager(kernel_name=KERNEL)
    km.start_kernel()
    t1 = time.perf_counter()
    kc = km.blocking_client()
    kc.start_channels()
    kc.wait_for_ready(timeout=TIMEOUT)
    return km, kc, t1 - t0, time.perf_counter() - t0


def direct_execute(kc, code, stream_sink=None):
    t0 = time.perf_counter()
    msg_id = kc.execute(code, store_history=False)
    reply = kc.get_shell_msg(timeout=TIMEOUT)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kc.get_shell_msg(timeout=TIMEOUT)
    rtt = time.perf_counter() - t0
    while True:
        msg = kc.get_iopub_msg(timeout=TIMEOUT)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream" and stream_sink:
            stream_sink(msg["content"]["text"])
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return rtt


def direct_flood(kc, counter, grace=5):
    """The flood, reading IOPub as it comes (a SUB socket drops past its high-water mark); stops at
    the idle status, or `grace` seconds without IOPub traffic once the execute_reply is in.
    Returns (seconds, idle status received)."""
    import queue
    t0 = time.perf_counter()
    msg_id = kc.execute(FLOOD_CODE, store_history=False)
    reply = False
    deadline = time.monotonic() + max(TIMEOUT, 600)
    while time.monotonic() < deadline:
        if not reply:
            try:
                while True:
                    m = kc.get_shell_msg(timeout=0)
                    reply = reply or m["parent_header"].get("msg_id") == msg_id
            except queue.Empty:
                pass
        try:
            msg = kc.get_iopub_msg(timeout=grace if reply else 0.5)
        except queue.Empty:
            if reply:
                return time.perf_counter() - t0 - grace, False
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            counter(msg["content"]["text"])
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return time.perf_counter() - t0, True
    raise ClientError("direct flood: no end within the timeout")


def run_direct(res):
    km, kc, t201, tinfo = direct_start()
    res["start_201_ms"] = round(t201 * 1000, 1)
    res["start_info_ms"] = round(tinfo * 1000, 1)
    try:
        for _ in range(20):
            direct_execute(kc, "1+1")
        rtts = [direct_execute(kc, "1+1") for _ in range(N)]
        res.update(rtt_median_us=round(statistics.median(rtts) * 1e6), rtt_p99_us=round(pct(rtts, 99) * 1e6))
        counter = FloodCounter()
        secs, idle = direct_flood(kc, counter)
        res.update(flood_figures(counter, secs))
        res["flood_idle_received"] = idle
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)

    def start_one():
        km, kc, _, _ = direct_start()
        kc.stop_channels()
        return km
    kms = concurrent_starts(start_one, res)
    try:
        res["conc_rt_per_s"] = concurrent_clients([("direct", km.get_connection_info(session=False))
                                                   for km in kms], res)
    finally:
        for km in kms:
            km.shutdown_kernel(now=True)


# ------------------------------------------------------------------------------ concurrent clients

def concurrent_starts(start_one, res):
    """Calls `start_one` from CONC threads at once; records the time they took and the failures
    in `res` (conc_start_s, conc_start_failures, conc_start_errors) and returns what the calls
    that succeeded returned."""
    started, failures = [None] * CONC, []

    def one(i):
        try:
            started[i] = start_one()
        except Exception as e:  # noqa: BLE001
            failures.append(f"{type(e).__name__}: {e}")
    t0 = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(CONC)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT + 30)
    res["conc_start_s"] = round(time.perf_counter() - t0, 2)
    res["conc_start_failures"] = len(failures)
    if failures:
        res["conc_start_errors"] = failures[:3]
    return [k for k in started if k]


def _client_proc(target, start_at, stop_at, q):
    try:
        if target[0] == "gateway":
            _, url, token, kid = target
            ks = KernelSocket(url, kid, token, timeout=TIMEOUT)
            ks.kernel_info(timeout=TIMEOUT)
            run_one = lambda: ks.execute("1+1", timeout=TIMEOUT)  # noqa: E731
        else:
            from jupyter_client.blocking import BlockingKernelClient
            kc = BlockingKernelClient()
            kc.load_connection_info(target[1])
            kc.start_channels()
            kc.wait_for_ready(timeout=TIMEOUT)
            run_one = lambda: direct_execute(kc, "1+1")  # noqa: E731
        while time.time() < start_at:
            time.sleep(0.001)
        n = 0
        while time.time() < stop_at:
            run_one()
            n += 1
        q.put(("ok", n))
    except Exception as e:  # noqa: BLE001
        q.put(("error", f"{type(e).__name__}: {e}"))


def concurrent_clients(targets, res):
    """Round trips per second, all clients together, one process per client."""
    if not targets:
        return 0
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    start_at = time.time() + 5  # time to connect
    procs = [ctx.Process(target=_client_proc, args=(t, start_at, start_at + DURATION, q)) for t in targets]
    for p in procs:
        p.start()
    results = []
    for _ in procs:
        results.append(q.get(timeout=DURATION + TIMEOUT + 10))
    for p in procs:
        p.join(10)
        if p.is_alive():
            p.kill()
    errors = [r[1] for r in results if r[0] != "ok"]
    res["conc_clients"] = len(targets)
    res["conc_client_failures"] = len(errors)
    if errors:
        res["conc_client_errors"] = errors[:3]
    return round(sum(r[1] for r in results if r[0] == "ok") / DURATION)


# ----------------------------------------------------------------------------------------- report

ROWS = [  # key, label, lower is better
    ("start_201_ms", "kernel start: POST to 201 (ms)", True),
    ("start_info_ms", "kernel start: POST to kernel_info_reply (ms)", True),
    ("rtt_median_us", "execute `1+1` round trip, median (µs)", True),
    ("rtt_p99_us", "execute `1+1` round trip, p99 (µs)", True),
    ("cpu_us_per_execute", "gateway CPU per execute (µs)", True),
    ("flood_mb_s", "print flood throughput (MB/s)", False),
    ("flood_msgs_s", "print flood stream messages/s", False),
    ("flood_lines_lost", "print flood lines lost", True),
    ("flood_cpu_ms_per_mib", "gateway CPU per MiB of output (ms)", True),
    ("conc_start_s", "concurrent starts to kernel_info_reply, wall (s)", True),
    ("conc_start_failures", "concurrent start failures", True),
    ("conc_rt_per_s", "concurrent clients: round trips/s, total", False),
    ("rss_idle_mib", "gateway RSS idle (MiB)", True),
    ("rss_idle_kernels_mib", "gateway RSS with idle kernels (MiB)", True),
]


def report(files):
    sides = []
    for f in files:
        with open(f) as fh:
            sides.append(json.load(fh))
    names = [s["side"] for s in sides]
    by = {s["side"]: s for s in sides}
    cfg = next((s for s in sides if s.get("available")), sides[0])
    lines = [f"kernel `{cfg.get('kernel')}`; N={cfg.get('n')} round trips on one websocket; print flood "
             f"{cfg.get('flood_mib_expected')} MiB in {LINE}-byte lines, a flush every {cfg.get('flood_chunk')} lines; "
             f"{cfg.get('conc')} concurrent starts, then {cfg.get('conc')} clients for {cfg.get('duration')} s; "
             f"{cfg.get('idle_kernels')} idle kernels; loopback, {os.cpu_count()} CPUs", ""]
    ratio_cols = []
    if "gateway" in by and "upstream" in by:
        ratio_cols.append(("gateway/upstream", "gateway", "upstream"))
    if "gateway" in by and "direct" in by:
        ratio_cols.append(("gateway/direct", "gateway", "direct"))
    if not ratio_cols and "upstream" in by and "direct" in by:
        ratio_cols.append(("upstream/direct", "upstream", "direct"))
    head = ["figure"] + [n if by[n].get("available") else f"{n} (unavailable)" for n in names] + [c[0] for c in ratio_cols]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for key, label, _ in ROWS:
        row = [label]
        for n in names:
            v = by[n].get(key)
            row.append("–" if v is None else (f"{v:g}" if isinstance(v, float) else str(v)))
        for _, a, b in ratio_cols:
            va, vb = by[a].get(key), by[b].get(key)
            row.append(f"{va / vb:.2f}x" if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and vb else "–")
        lines.append("| " + " | ".join(row) + " |")
    for s in sides:
        if not s.get("available"):
            lines.append(f"\n{s['side']}: unavailable: {s.get('error', '')}")
        for k in ("conc_start_errors", "conc_client_errors"):
            if s.get(k):
                lines.append(f"\n{s['side']}: {k}: {s[k]}")
    print("\n".join(lines))


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ("gateway", "direct", "report"):
        print(__doc__, file=sys.stderr)
        return 2
    if sys.argv[1] == "report":
        report(sys.argv[2:])
        return 0
    import argparse
    p = argparse.ArgumentParser()
    p.add_argument("mode")
    p.add_argument("--name", required=True)
    p.add_argument("--gateway-url")
    p.add_argument("--token")
    p.add_argument("--pid", type=int)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    res = {"side": args.name, "kernel": KERNEL, "n": N, "flood_mib_expected": FLOOD_MIB, "flood_chunk": FLOOD_CHUNK,
           "conc": CONC, "duration": DURATION, "idle_kernels": IDLE_KERNELS}
    rc = 0
    try:
        if args.mode == "gateway":
            GatewaySide(args.gateway_url, args.token, args.pid).run(res)
        else:
            run_direct(res)
        res["available"] = True
    except Exception as e:  # noqa: BLE001
        res["available"] = False
        res["error"] = f"{type(e).__name__}: {e}"
        print(f"kernel_bench: {args.name}: {res['error']}", file=sys.stderr)
        rc = 1
    with open(args.out, "w") as f:
        json.dump(res, f)
    print(json.dumps(res), file=sys.stderr)
    return rc


if __name__ == "__main__":
    rc = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)
