#!/usr/bin/env bash
# The main job on one machine: the gateway serves a local python kernelspec (Debian's ipykernel)
# whose metadata also names kernel images, plus a Kubernetes-style spec naming two more; the KIP
# runs beside it as a daemon, learns the images from the gateway's listing and pulls them into
# containerd (k8s.io) from a local registry; then a notebook cell runs through the gateway's
# websocket and its output is printed. Everything runs in a temp dir and is stopped at the end
# (KEEP=1 leaves the registry and containerd running).
#
# Both binaries keep their default admin ports (gateway 9091, KIP 9090) and so run side by side.
set -euo pipefail
cd "$(dirname "$0")/../.."

bash tests/scripts/install-deps.sh
cargo build --release -p kip -p gateway
KIP=$PWD/target/release/kip
GATEWAY=$PWD/target/release/gateway
CLIENT_PY=${KIP_TEST_CLIENT_VENV:-/opt/kip-test/client-venv}/bin/python
TOKEN=demo-token

DIR=$(mktemp -d /tmp/kip-demo.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
  if [[ ${KEEP:-0} != 1 ]]; then bash tests/scripts/env-down.sh "$DIR" >/dev/null || true; fi
}
trap cleanup EXIT INT TERM
bash tests/scripts/env-up.sh "$DIR" registry containerd
# shellcheck disable=SC1091
source "$DIR/env"

echo "== pushing kernel images to $KIP_TEST_REGISTRY"
mapfile -t REFS < <(bash tests/scripts/build-images.sh "$KIP_TEST_REGISTRY" demo/kernel 4 16)
printf '  %s\n' "${REFS[@]}"

echo "== kernelspecs"
python3 - "$DIR/jupyter/kernels" "${REFS[@]}" <<'PY'
import json, os, sys
root, refs = sys.argv[1], sys.argv[2:]
def write(name, spec):
    os.makedirs(os.path.join(root, name), exist_ok=True)
    json.dump(spec, open(os.path.join(root, name, "kernel.json"), "w"), indent=1)
    print(f"  {name}: {spec['metadata']['process_proxy']['config']}")
write("python3_local", {
    "argv": ["/usr/bin/python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
    "display_name": "Python 3 (local)", "language": "python",
    "metadata": {"process_proxy": {
        "class_name": "enterprise_gateway.services.processproxies.processproxy.LocalProcessProxy",
        "config": {"image_name": refs[0], "executor_image_name": refs[1]}}}})
write("spark_python_kubernetes", {
    "argv": ["bin/run.sh", "--kernel-id", "{kernel_id}"],
    "display_name": "Spark - Python (Kubernetes Mode)", "language": "python",
    "metadata": {"process_proxy": {
        "class_name": "enterprise_gateway.services.processproxies.k8s.KubernetesProcessProxy",
        "config": {"image_name": refs[2], "executor_image_name": refs[3]}}}})
PY

echo "== gateway on 127.0.0.1:8888 (admin on its default, 0.0.0.0:9091)"
JUPYTER_PATH=$DIR/jupyter JUPYTER_RUNTIME_DIR=$DIR/runtime EG_IP=127.0.0.1 EG_AUTH_TOKEN=$TOKEN \
  EG_DEFAULT_KERNEL_NAME=python3_local "$GATEWAY" >"$DIR/gateway.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -fs http://127.0.0.1:9091/readyz >/dev/null && break; sleep 0.1; done
curl -fs -H "Authorization: token $TOKEN" http://127.0.0.1:8888/api/kernelspecs |
  jq -c '.kernelspecs | to_entries[] | {name: .key, class: .value.spec.metadata.process_proxy.class_name}'

echo "== kip daemon beside it (admin on its default, 0.0.0.0:9090), pulling into containerd"
KIP_GATEWAY_HOST=http://127.0.0.1:8888 KIP_AUTH_TOKEN=$TOKEN \
  KIP_CRI_ENDPOINT="unix://$KIP_TEST_CONTAINERD_SOCK" "$KIP" >"$DIR/kip.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 600); do
  [[ $(ctr --address "$KIP_TEST_CONTAINERD_SOCK" -n k8s.io images ls -q | grep -c 'demo/kernel-[0-9]*:') -ge 4 ]] && break
  sleep 0.2
done
ctr --address "$KIP_TEST_CONTAINERD_SOCK" -n k8s.io images check | grep 'demo/kernel-[0-9]*:'
curl -fs http://127.0.0.1:9090/metrics | grep -E '^kip_(pulls_total|images_present)' | grep -v ' 0$' || true

echo "== a notebook cell through the gateway"
"$CLIENT_PY" - "$TOKEN" <<'PY'
import sys
sys.path.insert(0, "tests/clients")
from kernel_ws import Gateway, KernelSocket
token = sys.argv[1]
gw = Gateway("http://127.0.0.1:8888", token)
kernel = gw.start_kernel("python3_local", env={"KERNEL_USERNAME": "demo"})
ws = KernelSocket("http://127.0.0.1:8888", kernel["id"], token)
try:
    ws.kernel_info()
    code = "import os, platform\nprint('hello from', platform.python_implementation(), platform.python_version(), 'as', os.environ['KERNEL_USERNAME'])\n6 * 7"
    print("In [1]:", code.replace("\n", "\n        "))
    result = ws.execute(code)
    for out in result["outputs"]:
        c = out["content"]
        print("Out[1]:" if out["msg_type"] == "execute_result" else "      ",
              (c.get("text") or c.get("data", {}).get("text/plain", "")).rstrip())
finally:
    ws.close()
    gw.delete_kernel(kernel["id"])
print("kernels left:", len(gw.list_kernels()))
PY
if [[ ${KEEP:-0} == 1 ]]; then echo "components left running; stop them with: bash tests/scripts/env-down.sh $DIR"; fi
