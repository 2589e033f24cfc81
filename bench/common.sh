# Shared by the benchmark scripts that start gateways and kernels (sourced, not run). The sourcing
# script sets BENCH (its name, for messages), DIR (the run's temporary directory) and TOKEN (the
# gateways' EG_AUTH_TOKEN) before calling these.

# The pids of every descendant of PID.
descendants() { # PID
  local p
  for p in $(ps -o pid= --ppid "$1" 2>/dev/null); do
    echo "$p"
    descendants "$p"
  done
}

# Processes of this run other than this shell: anything whose command line names the run's
# directory (kernels run in their own sessions, so a process group does not hold them), and every
# pod process of the fake cluster (its node gives each a FAKE_POD_DIR under the directory).
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

# TERM, up to 10 s, then KILL with its descendants; nothing when PID is empty or gone.
stop_pid() { # PID
  local pid=$1 kids
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
  kids=$(descendants "$pid")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  # shellcheck disable=SC2086
  kill -KILL "$pid" $kids 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# DELETE every kernel the gateway at URL lists.
delete_kernels() { # URL
  local id
  for id in $(curl -s -m 10 -H "Authorization: token $TOKEN" "$1/api/kernels" | jq -r '.[]?.id' 2>/dev/null); do
    curl -s -m 30 -o /dev/null -X DELETE -H "Authorization: token $TOKEN" "$1/api/kernels/$id" || true
  done
}

# A running gateway's kernels deleted through its API, then the gateway stopped.
stop_gateway() { # PID URL
  [[ -n $1 ]] && kill -0 "$1" 2>/dev/null || return 0
  delete_kernels "$2"
  stop_pid "$1"
}

# The end of a run: whatever is left of it killed, its directory removed (kept with KEEP=1).
finish_run() {
  local p
  for p in $(run_pids); do kill -KILL "$p" 2>/dev/null || true; done
  if [[ ${KEEP:-0} == 1 ]]; then echo "$BENCH: kept $DIR" >&2; else rm -rf "$DIR"; fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Runs COMMAND every 0.2 s until it succeeds (0), PID exits (1, with the tail of LOG) or 30 s pass
# (1).
wait_until() { # PID NAME LOG COMMAND...
  local pid=$1 name=$2 log=$3
  shift 3
  for _ in $(seq 1 150); do
    "$@" && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$BENCH: $name exited while starting; its log:" >&2
      tail -20 "$log" >&2
      return 1
    fi
    sleep 0.2
  done
  echo "$BENCH: $name did not come up within 30 s" >&2
  return 1
}
