#!/usr/bin/env bash
# The gateway's Kubernetes launcher against the FAKE cluster (tests/fake-k8s: a Python stand-in for
# kube-apiserver whose one node runs each kernel pod as local processes, the in-pod launcher and
# Debian's ipykernel; no real cluster can be installed here): launch latency and its phases, API
# requests per launch and while kernels idle, time to fail on an unpullable image, and many
# concurrent launches. bench/kube_bench.py does the measuring; see it for the figures.
#
#   bash bench/kube-bench.sh                                  # all parts, CONC=100
#   N=20 IDLE_KERNELS=5 IDLE_SECONDS=60 CONC=30 bash bench/kube-bench.sh
#   PARTS=latency,fail bash bench/kube-bench.sh
#
# Knobs: PARTS (latency,idle,fail,concurrent), N, IDLE_KERNELS, IDLE_SECONDS, FAIL_RUNS, CONC,
# CONC_TIMEOUT (the concurrent launches' KERNEL_LAUNCH_TIMEOUT), TIMEOUT (see kube_bench.py).
# The gateway (target/release/gateway, built here) keeps EG_KERNEL_LAUNCH_TIMEOUT at its default
# (30 s, as upstream) unless it is set. The table and a markdown block go to stdout, progress and
# logs to stderr; KEEP=1 keeps the temporary directory (logs, the fake's state, results JSON) and
# RESULTS_JSON=PATH copies the results JSON there.
set -euo pipefail
cd "$(dirname "$0")/.."
TOKEN=bench-token
KUBE_TOKEN=bench-kube-token
IMAGE=docker.io/elyra/kernel-py:3.3.0
UNPULLABLE=docker.io/nobody/no-such-image:1

FAKE_PY=${KIP_CHART_VENV:-/opt/kip-test/venv}/bin/python
PY=${KIP_TEST_CLIENT_VENV:-/opt/kip-test/client-venv}/bin/python
EG_SRC=${KIP_TEST_EG_SRC:-/opt/kip-test/eg-src}
TEMPLATE=$EG_SRC/jupyter_enterprise_gateway-3.3.0/etc/kernel-launchers/kubernetes/scripts/kernel-pod.yaml.j2
GATEWAY=$PWD/target/release/gateway
for f in "$FAKE_PY" "$PY" "$TEMPLATE"; do
  [[ -e $f ]] || { echo "kube-bench: $f missing: tests/scripts/install-deps.sh installs it" >&2; exit 1; }
done

DIR=$(mktemp -d /tmp/kube-bench.XXXXXX)
FAKE_PID='' GW_PID='' GW_URL='' BENCH_PID=''

descendants() {
  local p
  for p in $(ps -o pid= --ppid "$1" 2>/dev/null); do
    echo "$p"
    descendants "$p"
  done
}
# Processes of this run other than this shell: anything whose command line names the run's
# directory, and every pod process (the fake's node gives each FAKE_POD_DIR under it).
run_pids() {
  local d p
  for d in /proc/[0-9]*; do
    p=${d#/proc/}
    [[ $p == "$$" ]] && continue
    if { tr '\0' '\n' <"$d/cmdline"; } 2>/dev/null | grep -qF "$DIR/" ||
      { tr '\0' '\n' <"$d/environ"; } 2>/dev/null | grep -qF "FAKE_POD_DIR=$DIR/"; then
      echo "$p"
    fi
  done
}
stop() { # PID: TERM, up to 10 s, then KILL with its descendants
  local pid=$1 kids
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
  kids=$(descendants "$pid")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  # shellcheck disable=SC2086
  kill -KILL "$pid" $kids 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local id p
  if [[ -n $BENCH_PID ]]; then
    kill -KILL "$BENCH_PID" 2>/dev/null || true
    wait "$BENCH_PID" 2>/dev/null || true
  fi
  if [[ -n $GW_PID ]] && kill -0 "$GW_PID" 2>/dev/null; then
    for id in $(curl -s -m 10 -H "Authorization: token $TOKEN" "$GW_URL/api/kernels" | jq -r '.[]?.id' 2>/dev/null); do
      curl -s -m 30 -o /dev/null -X DELETE -H "Authorization: token $TOKEN" "$GW_URL/api/kernels/$id" || true
    done
  fi
  stop "$GW_PID"
  stop "$FAKE_PID" # its node kills every pod's process group on the way out
  for p in $(run_pids); do kill -KILL "$p" 2>/dev/null || true; done
  if [[ ${KEEP:-0} == 1 ]]; then echo "kube-bench: kept $DIR" >&2; else rm -rf "$DIR"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cargo build --release -p gateway >&2

# The fake cluster.
"$FAKE_PY" tests/fake-k8s/apiserver.py --port 0 --token "$KUBE_TOKEN" --state-dir "$DIR/state" \
  --kubeconfig-out "$DIR/kubeconfig" --ready-file "$DIR/fake.url" >"$DIR/fake.out" 2>"$DIR/fake.log" &
FAKE_PID=$!
for _ in $(seq 1 150); do
  [[ -s $DIR/fake.url ]] && break
  kill -0 "$FAKE_PID" 2>/dev/null || { echo "kube-bench: the fake API server exited:" >&2; tail -20 "$DIR/fake.log" >&2; exit 1; }
  sleep 0.2
done
FAKE_URL=$(head -1 "$DIR/fake.url")
[[ $FAKE_URL == http://* ]] || { echo "kube-bench: the fake API server did not start" >&2; exit 1; }
echo "kube-bench: fake API server at $FAKE_URL (pid $FAKE_PID)" >&2

# Kernelspecs: upstream's stock pod template with the kernel image, and an image no registry has.
spec() { # IMAGE
  jq -n --arg image "$1" '{
    argv: ["python", "/usr/local/share/jupyter/kernels/python_kubernetes/scripts/launch_kubernetes.py",
           "--RemoteProcessProxy.kernel-id", "{kernel_id}",
           "--RemoteProcessProxy.port-range", "{port_range}",
           "--RemoteProcessProxy.response-address", "{response_address}",
           "--RemoteProcessProxy.public-key", "{public_key}"],
    display_name: "Python on Kubernetes", language: "python",
    metadata: {process_proxy: {
      class_name: "enterprise_gateway.services.processproxies.k8s.KubernetesProcessProxy",
      config: {image_name: $image}}}}'
}
mkdir -p "$DIR/jupyter/kernels/k8s_stock/scripts" "$DIR/jupyter/kernels/k8s_unpullable" "$DIR/home"
spec "$IMAGE" >"$DIR/jupyter/kernels/k8s_stock/kernel.json"
cp "$TEMPLATE" "$DIR/jupyter/kernels/k8s_stock/scripts/"
spec "$UNPULLABLE" >"$DIR/jupyter/kernels/k8s_unpullable/kernel.json"

# The gateway.
port=$(free_port)
admin=$(free_port)
GW_URL=http://127.0.0.1:$port
env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$DIR/home" LANG=C.UTF-8 \
  JUPYTER_PATH="$DIR/jupyter" JUPYTER_RUNTIME_DIR="$DIR/runtime" \
  KUBECONFIG="$DIR/kubeconfig" EG_RESPONSE_IP=127.0.0.1 EG_RESPONSE_PORT=0 \
  EG_KERNEL_CLUSTER_ROLE=kernel-controller EG_SOCKET_TIMEOUT=2 \
  ${EG_KERNEL_LAUNCH_TIMEOUT:+EG_KERNEL_LAUNCH_TIMEOUT=$EG_KERNEL_LAUNCH_TIMEOUT} \
  EG_AUTH_TOKEN=$TOKEN EG_LIST_KERNELS=True EG_DEFAULT_KERNEL_NAME=k8s_stock \
  EG_IP=127.0.0.1 EG_PORT="$port" EG_ADMIN_ADDR="127.0.0.1:$admin" RUST_LOG=info \
  "$GATEWAY" >"$DIR/gateway.log" 2>&1 &
GW_PID=$!
for _ in $(seq 1 150); do
  curl -s -o /dev/null -m 2 "$GW_URL/api" && break
  kill -0 "$GW_PID" 2>/dev/null || { echo "kube-bench: the gateway exited:" >&2; tail -20 "$DIR/gateway.log" >&2; exit 1; }
  sleep 0.2
done
echo "kube-bench: gateway at $GW_URL (pid $GW_PID, admin 127.0.0.1:$admin)" >&2

$PY bench/kube_bench.py run --gateway "$GW_URL" --admin "http://127.0.0.1:$admin" --fake "$FAKE_URL" \
  --fake-token "$KUBE_TOKEN" --token "$TOKEN" --gateway-pid "$GW_PID" --out "$DIR/results.json" &
BENCH_PID=$!
wait $BENCH_PID || echo "kube-bench: kube_bench.py failed; reporting what it measured" >&2
[[ -s $DIR/results.json ]] || { echo "kube-bench: no results" >&2; tail -20 "$DIR/gateway.log" >&2; exit 1; }
if [[ -n ${RESULTS_JSON:-} ]]; then cp "$DIR/results.json" "$RESULTS_JSON"; fi
echo
$PY bench/kube_bench.py report "$DIR/results.json"
