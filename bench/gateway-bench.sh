#!/usr/bin/env bash
# `GET /api/kernelspecs` throughput and p99 latency of the gateway against upstream Enterprise
# Gateway (jupyter_enterprise_gateway 3.3.0, installed by tests/scripts/install-deps.sh) on the
# same kernelspec directory, same token, same wrk settings on loopback; then the gateway's RSS and
# CPU with WATCHERS idle watches held.
#
#   bash bench/gateway-bench.sh                       # 12 specs, wrk -t2 -c64 -d10s, 1000 watchers
#   SPECS=30 CONNS=128 DURATION=20s WATCHERS=5000 bash bench/gateway-bench.sh
#
# Both servers log to files at their default level (upstream: one INFO line per request, as it
# does out of the box; the gateway: nothing per request).
set -euo pipefail
cd "$(dirname "$0")/.."
SPECS=${SPECS:-12}
THREADS=${THREADS:-2}
CONNS=${CONNS:-64}
DURATION=${DURATION:-10s}
WATCHERS=${WATCHERS:-1000}
TOKEN=bench-token

bash tests/scripts/install-deps.sh >&2
cargo build --release -p gateway >&2
GATEWAY=$PWD/target/release/gateway
EG=${KIP_TEST_EG_VENV:-/opt/kip-test/eg-venv}/bin/jupyter-enterprisegateway

DIR=$(mktemp -d /tmp/gateway-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

# Kernelspecs shaped like upstream's Kubernetes ones: kernel.json, a logo, a launch script.
for i in $(seq 1 "$SPECS"); do
  d=$DIR/kernels/python_kubernetes_$i
  mkdir -p "$d/scripts"
  cat >"$d/kernel.json" <<EOF
{"display_name": "Python on Kubernetes $i", "language": "python",
 "metadata": {"process_proxy": {"class_name": "enterprise_gateway.services.processproxies.k8s.KubernetesProcessProxy",
   "config": {"image_name": "elyra/kernel-py:3.2.$i", "executor_image_name": "elyra/kernel-spark-py:3.2.$i"}},
   "debugger": true},
 "env": {},
 "argv": ["python", "/usr/local/share/jupyter/kernels/python_kubernetes_$i/scripts/launch_kubernetes.py",
   "--RemoteProcessProxy.kernel-id", "{kernel_id}", "--RemoteProcessProxy.port-range", "{port_range}",
   "--RemoteProcessProxy.response-address", "{response_address}", "--RemoteProcessProxy.public-key", "{public_key}"]}
EOF
  head -c 2048 /dev/urandom >"$d/logo-64x64.png"
  echo "print('launch')" >"$d/scripts/launch_kubernetes.py"
done
mkdir -p "$DIR/data"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP_PORT=$(free_port)
GW_PORT=$(free_port)
ADMIN_PORT=$(free_port)
common_env=(env -i PATH="$PATH" HOME="$DIR" JUPYTER_PATH="$DIR" JUPYTER_DATA_DIR="$DIR/data"
  EG_AUTH_TOKEN="$TOKEN" EG_DEFAULT_KERNEL_NAME=python_kubernetes_1)

"${common_env[@]}" "$EG" --ip=127.0.0.1 --port="$UP_PORT" --port_retries=0 >"$DIR/upstream.log" 2>&1 &
PIDS+=($!)
"${common_env[@]}" EG_IP=127.0.0.1 EG_PORT="$GW_PORT" EG_ADMIN_ADDR="127.0.0.1:$ADMIN_PORT" \
  "$GATEWAY" >"$DIR/gateway.log" 2>&1 &
GW_PID=$!
PIDS+=("$GW_PID")

wait_up() {
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0
    sleep 0.2
  done
  echo "gateway-bench: nothing answers on port $1" >&2
  exit 1
}
wait_up "$UP_PORT"
wait_up "$GW_PORT"

# Same listing from both, or the comparison means nothing.
A=$(curl -s -H "Authorization: token $TOKEN" "http://127.0.0.1:$UP_PORT/api/kernelspecs" | jq -S .)
B=$(curl -s -H "Authorization: token $TOKEN" "http://127.0.0.1:$GW_PORT/api/kernelspecs" | jq -S .)
if [[ $A != "$B" ]]; then
  echo "gateway-bench: the two listings differ" >&2
  diff <(echo "$A") <(echo "$B") >&2 || true
  exit 1
fi
BYTES=$(curl -s -H "Authorization: token $TOKEN" "http://127.0.0.1:$GW_PORT/api/kernelspecs" | wc -c)

# wrk's latency figures come with units (us, ms, s); convert to ms.
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000
    printf "%.2f", n }'
}
run_wrk() {
  local port=$1 out
  # Warm-up, then the measured run.
  wrk -t"$THREADS" -c"$CONNS" -d2s -H "Authorization: token $TOKEN" \
    "http://127.0.0.1:$port/api/kernelspecs" >/dev/null
  out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -H "Authorization: token $TOKEN" \
    "http://127.0.0.1:$port/api/kernelspecs")
  echo "$out" >&2
  local rps p99 non2xx
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  if [[ -n $non2xx ]]; then
    echo "gateway-bench: $non2xx non-2xx answers from port $port" >&2
    exit 1
  fi
  echo "$rps $(to_ms "$p99")"
}

echo "== upstream Enterprise Gateway 3.3.0 (port $UP_PORT)" >&2
read -r UP_RPS UP_P99 < <(run_wrk "$UP_PORT")
echo "== gateway (port $GW_PORT)" >&2
read -r GW_RPS GW_P99 < <(run_wrk "$GW_PORT")

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
RSS_IDLE=$(rss_kib "$GW_PID")

# Hold WATCHERS watches (wait=300 with the current ETag), each on its own connection.
ETAG=$(curl -s -D - -o /dev/null -H "Authorization: token $TOKEN" \
  "http://127.0.0.1:$GW_PORT/api/kernelspecs" | awk 'tolower($1) == "etag:" {print $2}' | tr -d '\r')
python3 - "$GW_PORT" "$TOKEN" "$ETAG" "$WATCHERS" >"$DIR/watchers.out" 2>&1 <<'EOF' &
import asyncio, sys
port, token, etag, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
async def watch():
    r, w = await asyncio.open_connection("127.0.0.1", int(port))
    w.write((f"GET /api/kernelspecs?wait=300 HTTP/1.1\r\nHost: x\r\nAuthorization: token {token}\r\n"
             f"If-None-Match: {etag}\r\n\r\n").encode())
    await w.drain()
    await r.read(1)
async def main():
    tasks = []
    for _ in range(n):
        tasks.append(asyncio.create_task(watch()))
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
asyncio.run(main())
EOF
PIDS+=($!)
held=0
for _ in $(seq 1 150); do
  held=$(curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '$1 == "gateway_watchers" {print $2}')
  [[ ${held:-0} -ge $WATCHERS ]] && break
  sleep 0.2
done
if [[ ${held:-0} -lt $WATCHERS ]]; then
  echo "gateway-bench: only ${held:-0} of $WATCHERS watchers held" >&2
  cat "$DIR/watchers.out" >&2
  exit 1
fi
sleep 1
T0=$(cpu_ticks "$GW_PID")
sleep 5
T1=$(cpu_ticks "$GW_PID")
RSS_WATCH=$(rss_kib "$GW_PID")
TICK=$(getconf CLK_TCK)

printf '\nkernelspecs: %s (listing %s bytes); wrk -t%s -c%s -d%s; loopback\n' \
  "$SPECS" "$BYTES" "$THREADS" "$CONNS" "$DURATION"
printf '| server | req/s | p99 (ms) |\n|---|---|---|\n'
printf '| upstream EG 3.3.0 | %.0f | %s |\n' "$UP_RPS" "$UP_P99"
printf '| gateway | %.0f | %s |\n' "$GW_RPS" "$GW_P99"
awk -v a="$GW_RPS" -v b="$UP_RPS" -v pa="$GW_P99" -v pb="$UP_P99" \
  'BEGIN { printf "throughput ratio gateway/upstream: %.1fx; p99 ratio upstream/gateway: %.1fx\n", a / b, pb / pa }'
awk -v i="$RSS_IDLE" -v w="$RSS_WATCH" -v n="$WATCHERS" -v t=$((T1 - T0)) -v hz="$TICK" \
  'BEGIN { printf "gateway RSS: %.1f MiB idle, %.1f MiB with %d watchers held; CPU while they are held: %.2f s over 5 s\n", i / 1024, w / 1024, n, t / hz }'
