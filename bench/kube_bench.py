"""Kubernetes launcher benchmark on the fake cluster (run by bench/kube-bench.sh).

    kube_bench.py run --gateway URL --admin URL --fake URL --fake-token T [--token T] \
        [--gateway-pid PID] --out FILE.json
    kube_bench.py report FILE.json                  # table and markdown block

`run` drives a gateway whose kernelspecs are `k8s_stock` (upstream's stock kernel-pod.yaml.j2,
image docker.io/elyra/kernel-py:3.3.0) and `k8s_unpullable` (image docker.io/nobody/no-such-image:1)
against the fake API server (tests/fake-k8s), whose `/fake/stats` counts API requests by verb and
resource. Requests this script sends to the fake's API (to see when a namespace is gone) are counted
here and subtracted, so the request figures are the gateway's own.

Parts (PARTS, comma list; all by default):
  latency     N sequential launches: POST /api/kernels to 201 (median, p90), the gateway's phase
              metrics (gateway_kernel_pod_launch_phase_duration_seconds: mean time from the start
              of the launch to scheduled, running, handshake), and the API requests per launch,
              delete included (each kernel is deleted and its namespace gone before the next).
  idle        IDLE_KERNELS kernels idle for IDLE_SECONDS: API requests in that window, scaled to
              per kernel-hour.
  fail        FAIL_RUNS launches of an unpullable image: POST to the 500 answer.
  concurrent  CONC launches at once (each with KERNEL_LAUNCH_TIMEOUT=CONC_TIMEOUT): wall time until
              every POST answered, 201s and failures, then all deleted at once.
Knobs (environment): N=10, IDLE_KERNELS=10, IDLE_SECONDS=30, FAIL_RUNS=3, CONC=100,
CONC_TIMEOUT=300, TIMEOUT=120 (seconds for any single wait).
"""

import argparse
import collections
import concurrent.futures
import json
import os
import re
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request

import benchlib
from benchlib import TICK, knobs, pct, proc_mib

N, IDLE_KERNELS, IDLE_SECONDS, FAIL_RUNS, CONC, CONC_TIMEOUT, TIMEOUT, PARTS = knobs(
    N=10, IDLE_KERNELS=10, IDLE_SECONDS=30.0, FAIL_RUNS=3, CONC=100, CONC_TIMEOUT=300, TIMEOUT=120.0,
    PARTS="latency,idle,fail,concurrent")
PARTS = PARTS.split(",")
USER = "bench"


def log(msg):
    print(f"kube-bench: {msg}", file=sys.stderr, flush=True)


def http(method, url, body=None, headers=None, timeout=TIMEOUT):
    """(status, parsed JSON or text) of one request; network errors are status 0."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except OSError as e:
        return 0, str(e)
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


class Bench:
    def __init__(self, a):
        self.gw = a.gateway.rstrip("/")
        self.admin = a.admin.rstrip("/")
        self.fake = a.fake.rstrip("/")
        self.gw_headers = {"Authorization": f"token {a.token}"} if a.token else {}
        self.fake_headers = {"Authorization": f"Bearer {a.fake_token}"}
        self.pid = a.gateway_pid
        self.own = collections.Counter()  # (verb, resource) of this script's requests to the fake API
        self.lock = threading.Lock()

    # --- the fake ---------------------------------------------------------------------------------
    def stats(self):
        status, body = http("GET", f"{self.fake}/fake/stats", headers=self.fake_headers)
        if status != 200:
            raise RuntimeError(f"GET /fake/stats answered {status}: {body}")
        return body

    def own_get(self, path, resource):
        with self.lock:
            self.own[("get", resource)] += 1
        return http("GET", f"{self.fake}{path}", headers=self.fake_headers)[0]

    def wait_gone(self, ns, pod):
        """Waits until the kernel's pod and namespace are gone from the fake."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if f"{ns}/{pod}" not in (self.stats().get("pods") or {}):
                if self.own_get(f"/api/v1/namespaces/{ns}", "namespaces") == 404:
                    return True
            time.sleep(0.1)
        log(f"namespace {ns} still there after {TIMEOUT} s")
        return False

    def settle(self, quiet=2.0):
        """Waits until the fake's request count stays unchanged for `quiet` seconds."""
        last, since = self.stats()["total"], time.monotonic()
        deadline = since + TIMEOUT
        while time.monotonic() < deadline:
            time.sleep(0.25)
            total = self.stats()["total"]
            if total != last:
                last, since = total, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return

    def delta(self, before, after):
        """API requests between two snapshots by (verb, resource), minus this script's own."""
        out = collections.Counter()
        for verb, by in after["requests"].items():
            for res, n in by.items():
                out[(verb, res)] += n
        for verb, by in before["requests"].items():
            for res, n in by.items():
                out[(verb, res)] -= n
        with self.lock:
            out.subtract(self.own)
            self.own.clear()
        return {f"{v} {r}": n for (v, r), n in sorted(out.items()) if n}

    # --- the gateway ------------------------------------------------------------------------------
    def start(self, spec, env=None, timeout=TIMEOUT):
        t0 = time.monotonic()
        status, body = http("POST", f"{self.gw}/api/kernels",
                            {"name": spec, "env": {"KERNEL_USERNAME": USER, **(env or {})}},
                            self.gw_headers, timeout=timeout)
        return status, body, time.monotonic() - t0

    def delete(self, kid):
        return http("DELETE", f"{self.gw}/api/kernels/{kid}", headers=self.gw_headers)[0]

    def metrics(self):
        status, text = http("GET", f"{self.admin}/metrics")
        if status != 200:
            raise RuntimeError(f"GET {self.admin}/metrics answered {status}")
        out = {}
        for line in text.splitlines():
            m = re.match(r'^(gateway_kernel_pod_launch_phase_duration_seconds_(?:sum|count))\{phase="(\w+)"\} (\S+)',
                         line)
            if m:
                out[f"{m[1].rsplit('_', 1)[1]}:{m[2]}"] = float(m[3])
            m = re.match(r'^gateway_kubernetes_api_requests_total\{verb="(\w+)"\} (\S+)', line)
            if m:
                out[f"api:{m[1]}"] = float(m[2])
        return out

    def rss_mib(self):
        return benchlib.rss_mib(self.pid) if self.pid else None

    def cpu_s(self):
        return benchlib.cpu_s(self.pid) if self.pid else None

    @staticmethod
    def ns_of(kid):
        return f"{USER}-{kid}"

    # --- parts ------------------------------------------------------------------------------------
    def latency(self):
        log(f"latency: {N} sequential launches")
        self.settle()
        m0, s0 = self.metrics(), self.stats()
        lat, dels, failures = [], [], []
        for i in range(N):
            status, body, dt = self.start("k8s_stock")
            if status != 201:
                failures.append(f"{status}: {str(body)[:200]}")
                log(f"launch {i} answered {status}: {str(body)[:200]}")
                continue
            lat.append(dt)
            kid = body["id"]
            t0 = time.monotonic()
            if self.delete(kid) != 204:
                log(f"DELETE {kid} did not answer 204")
            dels.append(time.monotonic() - t0)
            self.wait_gone(self.ns_of(kid), self.ns_of(kid))
        self.settle()
        m1, s1 = self.metrics(), self.stats()
        phases = {}
        for ph in ("scheduled", "running", "handshake"):
            n = m1.get(f"count:{ph}", 0) - m0.get(f"count:{ph}", 0)
            if n:
                phases[ph] = (m1[f"sum:{ph}"] - m0[f"sum:{ph}"]) / n
        req = self.delta(s0, s1)
        gw_api = {k[4:]: m1[k] - m0.get(k, 0) for k in m1 if k.startswith("api:") and m1[k] != m0.get(k, 0)}
        launched = max(len(lat), 1)
        return {
            "n": N, "ok": len(lat), "failures": failures,
            "post_201_s": lat, "median_s": statistics.median(lat) if lat else None,
            "p90_s": pct(lat, 90) if lat else None, "mean_s": statistics.mean(lat) if lat else None,
            "delete_median_s": statistics.median(dels) if dels else None,
            "phase_mean_s": phases,
            "requests_per_launch": {k: v / launched for k, v in req.items()},
            "requests_per_launch_total": sum(req.values()) / launched,
            "gateway_counted_per_launch": {k: v / launched for k, v in gw_api.items()},
        }

    def idle(self):
        log(f"idle: {IDLE_KERNELS} kernels for {IDLE_SECONDS:g} s")
        ids, failures = [], []
        for _ in range(IDLE_KERNELS):
            status, body, _dt = self.start("k8s_stock")
            if status == 201:
                ids.append(body["id"])
            else:
                failures.append(f"{status}: {str(body)[:200]}")
        self.settle()
        rss = self.rss_mib()
        s0, c0 = self.stats(), self.cpu_s()
        time.sleep(IDLE_SECONDS)
        s1, c1 = self.stats(), self.cpu_s()
        req = self.delta(s0, s1)
        for kid in ids:
            self.delete(kid)
        for kid in ids:
            self.wait_gone(self.ns_of(kid), self.ns_of(kid))
        self.settle()
        self.delta(s1, s1)  # drop the waits' own requests
        total = sum(req.values())
        hours = len(ids) * IDLE_SECONDS / 3600
        return {
            "kernels": len(ids), "seconds": IDLE_SECONDS, "failures": failures,
            "requests": req, "total": total,
            "per_kernel_hour": total / hours if hours else None,
            "gateway_rss_mib": rss,
            "gateway_cpu_ms_per_s": (c1 - c0) * 1000 / IDLE_SECONDS if c0 is not None else None,
        }

    def fail(self):
        log(f"fail: {FAIL_RUNS} launches of an unpullable image")
        times, answers = [], []
        for _ in range(FAIL_RUNS):
            status, body, dt = self.start("k8s_unpullable")
            answers.append(f"{status}: {str(body.get('message') if isinstance(body, dict) else body)[:300]}")
            if status == 500:
                times.append(dt)
            else:
                log(f"unpullable launch answered {status}: {str(body)[:200]}")
        self.settle()
        self.delta(self.stats(), self.stats())
        left = [p for p in (self.stats().get("pods") or {}) if p.startswith(f"{USER}-")]
        return {"runs": FAIL_RUNS, "times_s": times, "median_s": statistics.median(times) if times else None,
                "answers": answers, "pods_left": left}

    def concurrent(self):
        log(f"concurrent: {CONC} launches at once (KERNEL_LAUNCH_TIMEOUT={CONC_TIMEOUT})")
        self.settle()
        s0 = self.stats()
        results = []
        rss_peak = [self.rss_mib() or 0.0]
        mem_min = [mem_available_mib()]
        load_max = [os.getloadavg()[0]]
        stop = threading.Event()

        def sample():
            while not stop.wait(0.5):
                rss_peak[0] = max(rss_peak[0], self.rss_mib() or 0.0)
                mem_min[0] = min(mem_min[0], mem_available_mib())
                load_max[0] = max(load_max[0], os.getloadavg()[0])

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        barrier = threading.Barrier(CONC)

        def one(_):
            barrier.wait()
            return self.start("k8s_stock", {"KERNEL_LAUNCH_TIMEOUT": str(CONC_TIMEOUT)},
                              timeout=CONC_TIMEOUT + 60)

        busy0, cpu0 = machine_busy_s(), self.cpu_s()
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(CONC) as pool:
            for status, body, dt in pool.map(one, range(CONC)):
                results.append((status, body, dt, time.monotonic() - t0))
        wall = time.monotonic() - t0
        busy, gw_cpu = machine_busy_s() - busy0, self.cpu_s() - cpu0
        ok = [r for r in results if r[0] == 201]
        fails = collections.Counter(
            f"{r[0]}: {(r[1].get('message') if isinstance(r[1], dict) else str(r[1]))[:160]}"
            for r in results if r[0] != 201)
        lat = [r[2] for r in ok]
        pods_running = sum(1 for p in (self.stats().get("pods") or {}).values() if p.get("running"))
        log(f"concurrent: {len(ok)}/{CONC} up in {wall:.1f} s; deleting")
        t1 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(min(CONC, 50)) as pool:
            codes = list(pool.map(lambda r: self.delete(r[1]["id"]), ok))
        delete_answered = time.monotonic() - t1
        for r in ok:
            self.wait_gone(self.ns_of(r[1]["id"]), self.ns_of(r[1]["id"]))
        all_gone = time.monotonic() - t1
        stop.set()
        sampler.join()
        self.settle()
        req = self.delta(s0, self.stats())
        return {
            "conc": CONC, "launch_timeout": CONC_TIMEOUT, "ok": len(ok), "failures": dict(fails),
            "wall_s": wall, "median_s": statistics.median(lat) if lat else None,
            "max_s": max(lat) if lat else None, "pods_running_at_end": pods_running,
            "delete_answered_s": delete_answered, "delete_codes": dict(collections.Counter(codes)),
            "all_gone_s": all_gone, "gateway_rss_peak_mib": rss_peak[0],
            "mem_available_min_mib": mem_min[0], "load_max": load_max[0],
            "machine_busy_cpu_s": busy, "gateway_cpu_s": gw_cpu, "requests_total": sum(req.values()), "requests": req,
        }


def machine_busy_s():
    """CPU seconds the whole machine spent busy (all cores; /proc/stat minus idle and iowait)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / TICK


def mem_available_mib():
    return proc_mib("/proc/meminfo", "MemAvailable:") or 0.0


def run(a):
    b = Bench(a)
    out = {"machine": machine(), "parts": {}}
    t0 = time.monotonic()
    for part in PARTS:
        try:
            out["parts"][part] = getattr(b, part)()
        except Exception as e:  # one part failing still reports the others
            log(f"{part} failed: {e!r}")
            out["parts"][part] = {"error": repr(e)}
        # The whole run's watches: the gateway keeps one open and renews it when the server ends it.
        out["watches"] = {"seconds": time.monotonic() - t0,
                          "requests": b.stats()["requests"].get("watch", {})}
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1)


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpus": os.cpu_count(), "cpu": cpu, "mem_gib": round(mem_total_mib() / 1024, 1),
            "load": os.getloadavg()[0]}


def mem_total_mib():
    with open("/proc/meminfo") as f:
        return int(f.readline().split()[1]) / 1024


def ms(v):
    return "–" if v is None else f"{v * 1000:.0f}"


def report(a):
    with open(a.file) as f:
        r = json.load(f)
    p = r["parts"]
    rows = []
    lat = p.get("latency")
    if lat and "error" not in lat:
        ph = lat["phase_mean_s"]
        rows.append((f"launch: POST to 201, median / p90 (ms), {lat['ok']}/{lat['n']} ok",
                     f"{ms(lat['median_s'])} / {ms(lat['p90_s'])}"))
        rows.append(("DELETE /api/kernels/ID to 204, median (ms)", ms(lat.get("delete_median_s"))))
        for name in ("scheduled", "running", "handshake"):
            if name in ph:
                rows.append((f"launch phase `{name}`: mean time from the launch's start (ms)", ms(ph[name])))
        if "running" in ph and "handshake" in ph and lat["mean_s"] is not None:
            pod = ph["handshake"] - ph["running"]
            rows.append(("in-pod start: pod Running to connection info, mean (ms)", ms(pod)))
            rows.append(("gateway-side latency: mean POST to 201 minus in-pod start (ms)",
                         ms(lat["mean_s"] - pod)))
        by = ", ".join(f"{k} {v:g}" for k, v in lat["requests_per_launch"].items())
        rows.append(("API requests per launch, delete included", f"{lat['requests_per_launch_total']:g} ({by})"))
        if lat["failures"]:
            rows.append(("launch failures", "; ".join(lat["failures"])))
    idle = p.get("idle")
    if idle and "error" not in idle:
        by = ", ".join(f"{k} {v}" for k, v in idle["requests"].items()) or "none"
        rows.append((f"API requests, {idle['kernels']} kernels idle {idle['seconds']:g} s", f"{idle['total']} ({by})"))
        rows.append(("API requests per kernel-hour, idle", f"{idle['per_kernel_hour']:g}"))
        if idle["gateway_rss_mib"] is not None:
            rows.append((f"gateway RSS with {idle['kernels']} kernel pods (MiB); CPU idle (ms/s)",
                         f"{idle['gateway_rss_mib']:.1f}; {idle['gateway_cpu_ms_per_s']:.2f}"))
    fail = p.get("fail")
    if fail and "error" not in fail:
        rows.append((f"unpullable image: POST to 500, median of {fail['runs']} (ms)",
                     f"{ms(fail['median_s'])} ({len(fail['times_s'])}/{fail['runs']} answered 500, "
                     f"{len(fail['pods_left'])} pods left)"))
    conc = p.get("concurrent")
    if conc and "error" not in conc:
        f = "; ".join(f"{v}× {k}" for k, v in conc["failures"].items()) or "none"
        rows.append((f"{conc['conc']} concurrent launches: wall time until all answered (s)",
                     f"{conc['wall_s']:.1f} ({conc['ok']} × 201; failures: {f})"))
        rows.append(("  POST to 201 under that load, median / max (s)",
                     "–" if conc["median_s"] is None else f"{conc['median_s']:.1f} / {conc['max_s']:.1f}"))
        rows.append(("  delete all: DELETEs answered / every namespace gone (s)",
                     f"{conc['delete_answered_s']:.1f} / {conc['all_gone_s']:.1f}"))
        rows.append(("  gateway RSS peak (MiB); machine MemAvailable low (MiB)",
                     f"{conc['gateway_rss_peak_mib']:.1f}; {conc['mem_available_min_mib']:.0f}"))
        rows.append(("  CPU while launching: whole machine / gateway (s); load average peak",
                     f"{conc['machine_busy_cpu_s']:.0f} / {conc['gateway_cpu_s']:.2f}; {conc['load_max']:.0f}"))
        rows.append(("  API requests, launches and deletes", f"{conc['requests_total']}"))
    if "watches" in r:
        w = r["watches"]
        by = ", ".join(f"{k} {v}" for k, v in w["requests"].items()) or "none"
        rows.append((f"watch requests over the whole run ({w['seconds'] / 60:.1f} min)", by))
    for name, part in p.items():
        if "error" in part:
            rows.append((f"{name}: not measured", part["error"]))
    m = r["machine"]
    w = max(len(k) for k, _ in rows)
    print(f"machine: {m['cpus']} cpus ({m['cpu']}), {m['mem_gib']} GiB, load {m['load']:.1f} at start")
    for k, v in rows:
        print(f"{k:<{w}}  {v}")
    print("\n| figure | gateway (fake cluster) |\n|---|---|")
    for k, v in rows:
        print(f"| {k.strip()} | {v} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--gateway", required=True)
    r.add_argument("--admin", required=True)
    r.add_argument("--fake", required=True)
    r.add_argument("--fake-token", required=True)
    r.add_argument("--token", default="")
    r.add_argument("--gateway-pid", type=int)
    r.add_argument("--out", required=True)
    p = sub.add_parser("report")
    p.add_argument("file")
    a = ap.parse_args()
    run(a) if a.cmd == "run" else report(a)


if __name__ == "__main__":
    main()
