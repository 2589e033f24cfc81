#!/usr/bin/env bash
# Reaction time and idle cost of the KIP against this project's gateway, with default settings
# (KIP_INTERVAL=300): a local registry and containerd 1.6 (CRI), the gateway serving a kernelspec
# directory, and `kip` as a daemon.
#
#   bash bench/reaction-bench.sh                 # 3 new kernelspecs, 60 s idle window
#   ROUNDS=5 IDLE_SECONDS=120 bash bench/reaction-bench.sh
#
# Reaction: a kernelspec directory is written; "noticed" is when kip logs the changed image list,
# "pulled" when it logs the pull of the new image as finished.
# Idle cost: over IDLE_SECONDS with nothing changing, the requests the gateway served, the bytes
# kip moved through its read/write system calls (/proc/PID/io rchar+wchar: its sockets, an upper
# bound of the bytes on the wire) and the CPU time kip used. CPU per cycle: a second kip with
# KIP_INTERVAL=1 for IDLE_SECONDS, CPU time divided by its completed cycles.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
IDLE_SECONDS=${IDLE_SECONDS:-60}

bash tests/scripts/install-deps.sh >&2
cargo build --release -p kip -p gateway >&2
KIP=$PWD/target/release/kip
GATEWAY=$PWD/target/release/gateway

DIR=$(mktemp -d /tmp/kip-react.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  bash tests/scripts/env-down.sh "$DIR" >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM
bash tests/scripts/env-up.sh "$DIR" registry containerd >&2
# shellcheck disable=SC1091
source "$DIR/env"
CTR=(ctr --address "$KIP_TEST_CONTAINERD_SOCK" -n k8s.io)

mapfile -t REFS < <(bash tests/scripts/build-images.sh "$KIP_TEST_REGISTRY" bench/react $((ROUNDS + 1)) 8)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }

spec() { # name image
  mkdir -p "$DIR/jupyter/kernels/$1"
  cat >"$DIR/jupyter/kernels/$1/kernel.json.tmp" <<EOF
{"argv": ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
 "display_name": "$1", "language": "python",
 "metadata": {"process_proxy": {"class_name": "enterprise_gateway.services.processproxies.k8s.KubernetesProcessProxy",
                                "config": {"image_name": "$2"}}}}
EOF
  mv "$DIR/jupyter/kernels/$1/kernel.json.tmp" "$DIR/jupyter/kernels/$1/kernel.json"
}

spec k0 "${REFS[0]}"
GW_PORT=$(port) GW_ADMIN=$(port) KIP_ADMIN=$(port)
env -i PATH="$PATH" JUPYTER_PATH="$DIR/jupyter" JUPYTER_DATA_DIR="$DIR/data" EG_IP=127.0.0.1 \
  EG_PORT="$GW_PORT" EG_ADMIN_ADDR="127.0.0.1:$GW_ADMIN" "$GATEWAY" 2>"$DIR/gateway.log" &
PIDS+=($!)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$GW_PORT/api" >/dev/null && break; sleep 0.1; done
env -i PATH="$PATH" KIP_GATEWAY_HOST="http://127.0.0.1:$GW_PORT" \
  KIP_CRI_ENDPOINT="unix://$KIP_TEST_CONTAINERD_SOCK" KIP_ADMIN_ADDR="127.0.0.1:$KIP_ADMIN" \
  "$KIP" 2>"$DIR/kip.log" &
KIP_PID=$!
PIDS+=("$KIP_PID")

has() { "${CTR[@]}" images ls -q | grep -qxF "$1"; }
for _ in $(seq 600); do has "${REFS[0]}" && break; sleep 0.1; done
has "${REFS[0]}" || { echo "first image not pulled" >&2; cat "$DIR/kip.log" >&2; exit 1; }

echo "| round | noticed after (s) | pulled after (s) |"
echo "|---|---|---|"
for ((i = 1; i <= ROUNDS; i++)); do
  changes=$(grep -c "image list changed" "$DIR/kip.log" || true)
  t0=$(now)
  spec "k$i" "${REFS[$i]}"
  t1= t2=
  for _ in $(seq 3000); do
    if [[ -z $t1 ]] && (($(grep -c "image list changed" "$DIR/kip.log" || true) > changes)); then t1=$(now); fi
    if grep "pull finished" "$DIR/kip.log" | grep -qF "${REFS[$i]}"; then t2=$(now); [[ -n $t1 ]] || t1=$t2; break; fi
    sleep 0.01
  done
  [[ -n $t2 ]] || { echo "round $i: not pulled" >&2; exit 1; }
  printf "| %d | %.2f | %.2f |\n" "$i" "$(echo "$t1 - $t0" | bc -l)" "$(echo "$t2 - $t0" | bc -l)"
done

requests() { curl -fs "http://127.0.0.1:$GW_ADMIN/metrics" | awk '/^gateway_http_requests_total/ {s += $NF} END {print s + 0}'; }
io_bytes() { awk '/^(rchar|wchar):/ {s += $2} END {print s}' "/proc/$1/io"; }
cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) * 1000 / hz}' "/proc/$1/stat"; }

r0=$(requests) b0=$(io_bytes "$KIP_PID") c0=$(cpu_ms "$KIP_PID")
sleep "$IDLE_SECONDS"
r1=$(requests) b1=$(io_bytes "$KIP_PID") c1=$(cpu_ms "$KIP_PID")
minutes=$(echo "$IDLE_SECONDS / 60" | bc -l)
echo
echo "Idle, default settings, over ${IDLE_SECONDS} s:"
echo
echo "| requests per minute | bytes per minute (kip syscalls) | CPU ms per minute |"
echo "|---|---|---|"
printf "| %.1f | %.0f | %.1f |\n" "$(echo "($r1 - $r0) / $minutes" | bc -l)" \
  "$(echo "($b1 - $b0) / $minutes" | bc -l)" "$(echo "($c1 - $c0) / $minutes" | bc -l)"

# CPU per cycle: a second agent cycling every second over the same (unchanged) list.
env -i PATH="$PATH" KIP_GATEWAY_HOST="http://127.0.0.1:$GW_PORT" KIP_INTERVAL=1 KIP_WATCH_SECONDS=0 \
  KIP_CRI_ENDPOINT="unix://$KIP_TEST_CONTAINERD_SOCK" KIP_ADMIN_ADDR=off \
  "$KIP" 2>"$DIR/kip-fast.log" &
FAST=$!
PIDS+=("$FAST")
sleep 2
n0=$(grep -c "cycle finished" "$DIR/kip-fast.log" || true) c0=$(cpu_ms "$FAST")
sleep "$IDLE_SECONDS"
n1=$(grep -c "cycle finished" "$DIR/kip-fast.log" || true) c1=$(cpu_ms "$FAST")
echo
printf "CPU per cycle (KIP_INTERVAL=1, %d cycles): %.2f ms\n" "$((n1 - n0))" \
  "$(echo "($c1 - $c0) / ($n1 - $n0)" | bc -l)"
