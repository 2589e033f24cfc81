#!/usr/bin/env bash
# Runs the kernel clients (kernel_ws.py in both websocket protocols, jupyter_server_session.py,
# nbclient_run.py) against a gateway started here on 127.0.0.1 with the python3_local fixture
# kernelspec and a token, then stops it and every kernel it left.
#
#   bash tests/clients/run.sh upstream     # Enterprise Gateway 3.3.0 from the eg-venv
#   bash tests/clients/run.sh gateway [BIN] # target/release/gateway (build it first) or BIN
#   bash tests/clients/run.sh url http://127.0.0.1:8888 [TOKEN]   # a gateway already running
#
# Exit 0 when every client passed; the failing clients are named otherwise.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${KIP_TEST_CLIENT_VENV:-/opt/kip-test/client-venv}/bin/python
EG=${KIP_TEST_EG_VENV:-/opt/kip-test/eg-venv}/bin/jupyter-enterprisegateway
TOKEN=clients-token
DIR=$(mktemp -d /tmp/kernel-clients.XXXXXX)
PID=

cleanup() {
  local p
  if [[ -n $PID ]]; then
    for id in $(curl -s -m 10 -H "Authorization: token $TOKEN" "$URL/api/kernels" | jq -r '.[]?.id' 2>/dev/null); do
      curl -s -m 30 -o /dev/null -X DELETE -H "Authorization: token $TOKEN" "$URL/api/kernels/$id" || true
    done
    kill -TERM "$PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$PID" 2>/dev/null || true
  fi
  # Kernels run in their own sessions; their command lines name this run's directory.
  for f in /proc/[0-9]*/cmdline; do
    p=${f#/proc/}; p=${p%/cmdline}
    [[ $p != "$$" ]] && tr '\0' ' ' <"$f" 2>/dev/null | grep -qF "$DIR/" && kill -KILL "$p" 2>/dev/null || true
  done
  rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
start() { # NAME COMMAND...
  local name=$1
  shift
  URL=http://127.0.0.1:$port
  mkdir -p "$DIR/jupyter" "$DIR/runtime" "$DIR/data" "$DIR/home"
  cp -r tests/fixtures/kernels "$DIR/jupyter/"
  env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$DIR/home" LANG=C.UTF-8 JUPYTER_PATH="$DIR/jupyter" \
    JUPYTER_DATA_DIR="$DIR/data" JUPYTER_RUNTIME_DIR="$DIR/runtime" PYDEVD_DISABLE_FILE_VALIDATION=1 \
    EG_AUTH_TOKEN=$TOKEN EG_LIST_KERNELS=True EG_DEFAULT_KERNEL_NAME=python3_local \
    EG_IP=127.0.0.1 EG_PORT="$port" EG_ADMIN_ADDR=off "$@" \
    >"$DIR/$name.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 150); do
    curl -s -o /dev/null -m 2 "$URL/api" && return 0
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.2
  done
  echo "clients: $name did not start; its log:" >&2
  tail -20 "$DIR/$name.log" >&2
  exit 1
}

case ${1:-} in
upstream) start upstream "$EG" --ip=127.0.0.1 --port="$port" --port_retries=0 ;;
gateway) start gateway "${2:-target/release/gateway}" ;;
url)
  URL=${2:?url needs the gateway URL}
  TOKEN=${3:-}
  ;;
*)
  echo "usage: $0 upstream|gateway|url URL [TOKEN]" >&2
  exit 2
  ;;
esac

failed=()
run() { # NAME ARGS...
  local name=$1
  shift
  echo "== $name" >&2
  if timeout 300 "$PY" "$@" --gateway-url "$URL" ${TOKEN:+--token "$TOKEN"}; then :; else failed+=("$name"); fi
}
run kernel_ws-legacy tests/clients/kernel_ws.py
run kernel_ws-v1 tests/clients/kernel_ws.py --protocol v1
run jupyter_server_session tests/clients/jupyter_server_session.py
run nbclient_run tests/clients/nbclient_run.py
if ((${#failed[@]})); then
  echo "clients: FAILED: ${failed[*]}" >&2
  [[ -n $PID ]] && { echo "--- ${1} log (tail)" >&2; tail -30 "$DIR/$1.log" >&2; }
  exit 1
fi
echo "clients: all passed against $URL" >&2
