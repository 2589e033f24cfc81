#!/usr/bin/env bash
# Kernels through the gateway against upstream Enterprise Gateway 3.3.0 and against no gateway at
# all, on the same machine and the same local python kernelspec (tests/fixtures/kernels/python3_local,
# Debian's ipykernel): kernel start, execute round trip, the gateway's CPU per execute, print-flood
# throughput and losses, concurrent starts, concurrent clients, the gateway's RSS idle and with idle
# kernels. bench/kernel_bench.py does the measuring, one side at a time; see it for the figures.
#
#   bash bench/kernel-bench.sh                                 # all three sides
#   SIDES=upstream,direct N=200 FLOOD_MIB=20 bash bench/kernel-bench.sh
#
# Sides: `upstream` (jupyter-enterprisegateway from the eg-venv), `gateway` (target/release/gateway,
# built here), `direct` (jupyter_client on the kernel's ZeroMQ sockets: the floor). A side that
# cannot run (e.g. a gateway without kernel support) is reported unavailable; the others still run.
# Knobs: N, FLOOD_MIB, FLOOD_CHUNK, CONC, DURATION, IDLE_KERNELS, TIMEOUT (see kernel_bench.py).
# The table and a markdown block go to stdout, progress and logs to stderr; KEEP=1 keeps the
# temporary directory (logs, per-side JSON).
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=kernel-bench
SIDES=${SIDES:-upstream,gateway,direct}
TOKEN=bench-token
# shellcheck source=bench/common.sh
source bench/common.sh

bash tests/scripts/install-deps.sh >&2
PY=${KIP_TEST_CLIENT_VENV:-/opt/kip-test/client-venv}/bin/python
EG=${KIP_TEST_EG_VENV:-/opt/kip-test/eg-venv}/bin/jupyter-enterprisegateway
GATEWAY=$PWD/target/release/gateway

DIR=$(mktemp -d /tmp/kernel-bench.XXXXXX)
mkdir -p "$DIR/jupyter"
cp -r tests/fixtures/kernels "$DIR/jupyter/"
GW_PIDS=()

cleanup() {
  local p
  for p in "${GW_PIDS[@]}"; do stop_gateway "${p%%=*}" "${p#*=}"; done
  finish_run
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_up() { # PORT PID NAME LOG
  wait_until "$2" "$3" "$4" curl -s -o /dev/null -m 2 "http://127.0.0.1:$1/api"
}
unavailable() { # SIDE REASON
  echo "kernel-bench: $1 unavailable: $2" >&2
  jq -n --arg s "$1" --arg e "$2" '{side: $s, available: false, error: $e}' >"$DIR/$1.json"
}
# The kernels a gateway starts inherit its environment: a minimal one, the same for both gateways.
side_env() { # NAME
  mkdir -p "$DIR/$1/runtime" "$DIR/$1/data" "$DIR/$1/home"
  echo env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$DIR/$1/home" LANG=C.UTF-8 \
    JUPYTER_PATH="$DIR/jupyter" JUPYTER_DATA_DIR="$DIR/$1/data" JUPYTER_RUNTIME_DIR="$DIR/$1/runtime" \
    JUPYTER_CONFIG_DIR="$DIR/$1/config" PYDEVD_DISABLE_FILE_VALIDATION=1
  local v
  for v in KERNEL N FLOOD_MIB FLOOD_CHUNK CONC DURATION IDLE_KERNELS TIMEOUT; do
    [[ -n ${!v:-} ]] && echo "$v=${!v}"
  done
  return 0
}
bench_gateway() { # SIDE PID PORT
  echo "== $1 (pid $2, port $3)" >&2
  $PY bench/kernel_bench.py gateway --name "$1" --gateway-url "http://127.0.0.1:$3" --token "$TOKEN" \
    --pid "$2" --out "$DIR/$1.json" 2>>"$DIR/$1.bench.log" &
  wait $! || {
    tail -5 "$DIR/$1.bench.log" >&2
    [[ -s $DIR/$1.json ]] || unavailable "$1" "kernel_bench.py failed"
  }
  stop_gateway "$2" "http://127.0.0.1:$3"
}

FILES=()
for side in ${SIDES//,/ }; do
  case $side in
  upstream)
    port=$(free_port)
    # shellcheck disable=SC2046
    $(side_env upstream) EG_AUTH_TOKEN=$TOKEN EG_LIST_KERNELS=True EG_DEFAULT_KERNEL_NAME=python3_local \
      "$EG" --ip=127.0.0.1 --port="$port" --port_retries=0 >"$DIR/upstream.log" 2>&1 &
    pid=$!
    GW_PIDS+=("$pid=http://127.0.0.1:$port")
    if wait_up "$port" "$pid" upstream "$DIR/upstream.log"; then
      bench_gateway upstream "$pid" "$port"
    else
      unavailable upstream "did not start"
    fi
    ;;
  gateway)
    if ! cargo build --release -p gateway >&2; then
      unavailable gateway "cargo build --release -p gateway failed"
    else
      port=$(free_port)
      # shellcheck disable=SC2046
      $(side_env gateway) EG_AUTH_TOKEN=$TOKEN EG_LIST_KERNELS=True EG_DEFAULT_KERNEL_NAME=python3_local \
        EG_IP=127.0.0.1 EG_PORT="$port" EG_ADMIN_ADDR=off "$GATEWAY" >"$DIR/gateway.log" 2>&1 &
      pid=$!
      GW_PIDS+=("$pid=http://127.0.0.1:$port")
      if ! wait_up "$port" "$pid" gateway "$DIR/gateway.log"; then
        unavailable gateway "did not start"
      else
        # A gateway without kernel support answers POST /api/kernels with something other than 201.
        code=$(curl -s -m "${TIMEOUT:-120}" -o "$DIR/probe.json" -w '%{http_code}' -X POST \
          -H "Authorization: token $TOKEN" -H 'Content-Type: application/json' \
          -d '{"name":"python3_local","env":{"KERNEL_USERNAME":"bench"}}' "http://127.0.0.1:$port/api/kernels" || true)
        if [[ $code == 201 ]]; then
          curl -s -m 30 -o /dev/null -X DELETE -H "Authorization: token $TOKEN" \
            "http://127.0.0.1:$port/api/kernels/$(jq -r .id "$DIR/probe.json")" || true
          bench_gateway gateway "$pid" "$port"
        else
          unavailable gateway "POST /api/kernels answered $code: $(head -c 200 "$DIR/probe.json" 2>/dev/null)"
          stop_gateway "$pid" "http://127.0.0.1:$port"
        fi
      fi
    fi
    ;;
  direct)
    echo "== direct (jupyter_client, ZeroMQ, no gateway)" >&2
    # shellcheck disable=SC2046
    $(side_env direct) $PY bench/kernel_bench.py direct --name direct --out "$DIR/direct.json" \
      2>>"$DIR/direct.bench.log" &
    wait $! || {
      tail -5 "$DIR/direct.bench.log" >&2
      [[ -s $DIR/direct.json ]] || unavailable direct "kernel_bench.py failed"
    }
    ;;
  *)
    echo "kernel-bench: unknown side $side (SIDES is a comma list of upstream, gateway, direct)" >&2
    exit 2
    ;;
  esac
  FILES+=("$DIR/$side.json")
done

echo
$PY bench/kernel_bench.py report "${FILES[@]}"
