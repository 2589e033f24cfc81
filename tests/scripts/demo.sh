#!/usr/bin/env bash
# The main job on an embedded default: starts a local registry and containerd 1.6 in a temp dir,
# pushes four multi-layer kernel images, serves an Enterprise-Gateway-shaped kernelspec listing
# that names them, and runs `kip --once` with the default fetcher against containerd. Shows what
# landed on the node, then stops everything (KEEP=1 leaves the components running).
set -euo pipefail
cd "$(dirname "$0")/../.."

bash tests/scripts/install-deps.sh
cargo build --release -p kip
KIP=$PWD/target/release/kip

DIR=$(mktemp -d /tmp/kip-demo.XXXXXX)
WWW_PID=
cleanup() {
  [[ -n $WWW_PID ]] && kill "$WWW_PID" 2>/dev/null || true
  if [[ ${KEEP:-0} != 1 ]]; then bash tests/scripts/env-down.sh "$DIR" >/dev/null || true; fi
}
trap cleanup EXIT INT TERM
bash tests/scripts/env-up.sh "$DIR" registry containerd
# shellcheck disable=SC1091
source "$DIR/env"

echo "== pushing kernel images to $KIP_TEST_REGISTRY"
mapfile -t REFS < <(bash tests/scripts/build-images.sh "$KIP_TEST_REGISTRY" demo/kernel 4 16)
printf '  %s\n' "${REFS[@]}"

echo "== serving an upstream-shaped /api/kernelspecs"
mkdir -p "$DIR/www/api"
python3 - "$DIR/www/api/kernelspecs" "${REFS[@]}" <<'PY'
import json, sys
out, refs = sys.argv[1], sys.argv[2:]
def spec(name, config):
    return {"name": name, "resources": {}, "spec": {
        "argv": ["python", f"/usr/local/share/jupyter/kernels/{name}/scripts/launch_kubernetes.py"],
        "env": {}, "display_name": name, "language": "python", "interrupt_mode": "signal",
        "metadata": {"process_proxy": {
            "class_name": "enterprise_gateway.services.processproxies.k8s.KubernetesProcessProxy",
            "config": config}}}}
specs = {
    "python_kubernetes": spec("python_kubernetes", {"image_name": refs[0]}),
    "r_kubernetes": spec("r_kubernetes", {"image_name": refs[1]}),
    "spark_python_kubernetes": spec("spark_python_kubernetes",
                                    {"image_name": refs[2], "executor_image_name": refs[3]}),
}
json.dump({"default": "python_kubernetes", "kernelspecs": specs}, open(out, "w"), indent=1)
PY
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server "$PORT" --bind 127.0.0.1 --directory "$DIR/www" >/dev/null 2>&1 &
WWW_PID=$!
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$PORT/api/kernelspecs" >/dev/null && break; sleep 0.1; done

echo "== kip --once (KernelSpecsFetcher -> containerd)"
KIP_GATEWAY_HOST="http://127.0.0.1:$PORT" KIP_CRI_ENDPOINT="unix://$KIP_TEST_CONTAINERD_SOCK" \
  "$KIP" --once

echo "== images in containerd's k8s.io namespace"
ctr --address "$KIP_TEST_CONTAINERD_SOCK" -n k8s.io images check | grep demo/kernel
if [[ ${KEEP:-0} == 1 ]]; then echo "components left running; stop them with: bash tests/scripts/env-down.sh $DIR"; fi
