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
BENCH=kube-bench
TOKEN=bench-token
KUBE_TOKEN=bench-kube-token
IMAGE=docker.io/elyra/kernel-py:3.3.0
UNPULLABLE=docker.io/nobody/no-such-image:1
# shellcheck source=bench/common.sh
source bench/common.sh

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

cleanup() {
  if [[ -n $BENCH_PID ]]; then
    kill -KILL "$BENCH_PID" 2>/dev/null || true
    wait "$BENCH_PID" 2>/dev/null || true
  fi
  stop_gateway "$GW_PID" "$GW_URL"
  stop_pid "$FAKE_PID" # its node kills every pod's process group on the way out
  finish_run
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cargo build --release -p gateway >&2

# The fake cluster.
"$FAKE_PY" tests/fake-k8s/apiserver.py --port 0 --token "$KUBE_TOKEN" --state-dir "$DIR/state" \
  --kubeconfig-out "$DIR/kubeconfig" --ready-file "$DIR/fake.url" >"$DIR/fake.out" 2>"$DIR/fake.log" &
FAKE_PID=$!
wait_until "$FAKE_PID" "the fake API server" "$DIR/fake.log" test -s "$DIR/fake.url" || exit 1
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
wait_until "$GW_PID" "the gateway" "$DIR/gateway.log" curl -s -o /dev/null -m 2 "$GW_URL/api" || exit 1
echo "kube-bench: gateway at $GW_URL (pid $GW_PID, admin 127.0.0.1:$admin)" >&2

$PY bench/kube_bench.py run --gateway "$GW_URL" --admin "http://127.0.0.1:$admin" --fake "$FAKE_URL" \
  --fake-token "$KUBE_TOKEN" --token "$TOKEN" --gateway-pid "$GW_PID" --out "$DIR/results.json" &
BENCH_PID=$!
wait $BENCH_PID || echo "kube-bench: kube_bench.py failed; reporting what it measured" >&2
[[ -s $DIR/results.json ]] || { echo "kube-bench: no results" >&2; tail -20 "$DIR/gateway.log" >&2; exit 1; }
if [[ -n ${RESULTS_JSON:-} ]]; then cp "$DIR/results.json" "$RESULTS_JSON"; fi
echo
$PY bench/kube_bench.py report "$DIR/results.json"
