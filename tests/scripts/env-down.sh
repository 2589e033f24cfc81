#!/usr/bin/env bash
# Stops a test environment started by env-up.sh and removes its directory.
#
#   tests/scripts/env-down.sh DIR
#
# 1. Finds the processes that belong to DIR: the pids in DIR/*.pid and any
#    containerd, containerd-shim*, dockerd, docker-registry, docker-proxy or runc
#    process with an argument that is DIR or a path under it (shims carry
#    `-address DIR/.../containerd.sock`), plus all their descendants (the
#    processes of containers). Nothing else is ever signalled.
# 2. SIGKILLs container processes, SIGTERMs dockerd and waits for it, then SIGTERMs
#    the other daemons and shims, each step waiting up to KIP_TEST_STOP_TIMEOUT
#    seconds (default 10); SIGKILLs whatever is left.
# 3. Removes runc state left in /run/containerd/runc/ by containers of DIR that were
#    started with plain `ctr run` (the only state outside DIR that could disturb a
#    later run).
# 4. Unmounts everything mounted under DIR, most recent mount first.
# 5. Removes DIR (only if env-up.sh's marker DIR/.kip-test-env is there).
#
# Safe to run twice, on a half-started DIR and on a DIR that does not exist.
set -euo pipefail

log() { echo "env-down: $*" >&2; }

if (($# != 1)); then
  echo "usage: $0 DIR" >&2
  exit 2
fi
if [[ ! -e $1 ]]; then
  log "$1 does not exist: nothing to do"
  exit 0
fi
DIR=$(cd "$1" && pwd -P)
if [[ $DIR == / || ! -f $DIR/.kip-test-env ]]; then
  echo "env-down: $DIR was not created by env-up.sh (no .kip-test-env): not touching it" >&2
  exit 1
fi
stop_timeout=${KIP_TEST_STOP_TIMEOUT:-10}

# --- which processes belong to DIR ----------------------------------------------------------

# cmdline_mentions_dir PID: true if one of PID's arguments is DIR or a path under it,
# also in the forms --flag=PATH and unix://PATH.
cmdline_mentions_dir() {
  local arg
  while IFS= read -r -d '' arg; do
    arg=${arg#*=}
    arg=${arg#unix://}
    if [[ $arg == "$DIR" || $arg == "$DIR"/* ]]; then
      return 0
    fi
  done <"/proc/$1/cmdline"
  return 1
}

# is_daemon PID: true if PID runs one of the programs env-up.sh starts (or that they
# start), judged by the executable's name (and, for Python, the script's).
is_daemon() {
  local exe
  exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
  exe=${exe% (deleted)}
  case ${exe##*/} in
    containerd | containerd-shim | containerd-shim-runc-v1 | containerd-shim-runc-v2 | \
      dockerd | docker-registry | registry | docker-proxy | runc) return 0 ;;
    # The test token issuer of registry-token (a Python script).
    python3*) tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | grep -q '/token-issuer\.py$' && return 0 ;;
  esac
  return 1
}

# Prints "PID PPID" for every process.
all_procs() {
  local stat pid rest
  for stat in /proc/[0-9]*/stat; do
    # The second field (comm) is in parentheses and may hold spaces: cut after it.
    stat=$(<"$stat") 2>/dev/null || continue
    pid=${stat%% *}
    rest=${stat##*) }
    rest=${rest#* } # drop the state field
    echo "$pid ${rest%% *}"
  done
}

# Prints the pids that belong to DIR, the daemons first, then their descendants
# prefixed by "child ".
owned_procs() {
  local -A owned=() parent_of=()
  local pid ppid f changed
  while read -r pid ppid; do
    parent_of[$pid]=$ppid
  done < <(all_procs 2>/dev/null)

  # Pids env-up.sh recorded, still running the program it started.
  for f in "$DIR"/*.pid "$DIR"/docker/docker.pid; do
    [[ -f $f ]] || continue
    pid=$(<"$f") 2>/dev/null || continue
    [[ $pid =~ ^[0-9]+$ && -n ${parent_of[$pid]:-} ]] || continue
    if is_daemon "$pid" && cmdline_mentions_dir "$pid"; then
      owned[$pid]=daemon
    fi
  done
  # Any daemon or shim pointed at DIR (shims, dockerd's children, lost pid files).
  for pid in "${!parent_of[@]}"; do
    [[ -z ${owned[$pid]:-} ]] || continue
    if is_daemon "$pid" 2>/dev/null && cmdline_mentions_dir "$pid" 2>/dev/null; then
      owned[$pid]=daemon
    fi
  done
  # Descendants: the containers' processes (children of shims).
  changed=true
  while $changed; do
    changed=false
    for pid in "${!parent_of[@]}"; do
      [[ -z ${owned[$pid]:-} ]] || continue
      ppid=${parent_of[$pid]}
      if [[ -n ${owned[$ppid]:-} ]]; then
        if is_daemon "$pid"; then owned[$pid]=daemon; else owned[$pid]=child; fi
        changed=true
      fi
    done
  done
  for pid in "${!owned[@]}"; do
    echo "${owned[$pid]} $pid"
  done
}

alive() {
  local pid
  for pid in "$@"; do
    # A zombie is dead for our purpose (its parent reaps it).
    if [[ -e /proc/$pid ]] && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; then
      echo "$pid"
    fi
  done
}

# --- stop them ----------------------------------------------------------------------------
daemons=() children=()
while read -r kind pid; do
  if [[ $kind == child ]]; then children+=("$pid"); else daemons+=("$pid"); fi
done < <(owned_procs)

# term_and_wait PID...: SIGTERM, then wait up to $stop_timeout s; prints the pids
# still alive after that.
term_and_wait() {
  local deadline left
  kill -TERM "$@" 2>/dev/null || true
  deadline=$((SECONDS + stop_timeout))
  while ((SECONDS < deadline)); do
    left=$(alive "$@")
    [[ -n $left ]] || return 0
    sleep 0.2
  done
  alive "$@"
}

exe_name() {
  local exe
  exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 0
  exe=${exe% (deleted)}
  echo "${exe##*/}"
}

if ((${#children[@]})); then
  log "killing ${#children[@]} container process(es): ${children[*]}"
  kill -KILL "${children[@]}" 2>/dev/null || true
fi
# dockerd first: it needs its containerd to shut down cleanly (it hangs if that goes
# away first); then the rest (containerds, shims, registry).
first=() rest=()
for pid in "${daemons[@]}"; do
  if [[ $(exe_name "$pid") == dockerd ]]; then first+=("$pid"); else rest+=("$pid"); fi
done
left=()
if ((${#first[@]})); then
  log "stopping dockerd: ${first[*]}"
  mapfile -t left < <(term_and_wait "${first[@]}")
fi
if ((${#rest[@]})); then
  log "stopping ${#rest[@]} daemon(s) and shim(s): ${rest[*]}"
  mapfile -t more < <(term_and_wait "${rest[@]}")
  left+=("${more[@]}")
fi
mapfile -t left < <(alive "${left[@]}" "${children[@]}")
if ((${#left[@]})); then
  log "still running after SIGTERM and ${stop_timeout}s, sending SIGKILL: ${left[*]}"
  kill -KILL "${left[@]}" 2>/dev/null || true
  sleep 0.5
fi
# Shims or containers started while we were stopping (a daemon finishing a request).
mapfile -t late < <(owned_procs | awk '{ print $2 }')
if ((${#late[@]})); then
  log "killing late process(es): ${late[*]}"
  kill -KILL "${late[@]}" 2>/dev/null || true
  sleep 0.5
fi
rm -f "$DIR"/*.pid

# runc state of containers started through this containerd without CRI (`ctr run`)
# lives in /run/containerd/runc/<namespace>/<id>, shared by all containerds. It is
# left behind when a shim is killed, and a later container with the same id then
# fails with "container with given ID already exists". Remove the entries whose
# rootfs is under DIR. (CRI's and dockerd's runc state is under DIR already.)
for f in /run/containerd/runc/*/*/state.json; do
  [[ -f $f ]] || continue
  if grep -qF "\"$DIR/" "$f" 2>/dev/null; then
    log "removing stale runc state ${f%/state.json}"
    rm -rf "${f%/state.json}"
  fi
done

# --- unmount --------------------------------------------------------------------------------

# Mount points under DIR from /proc/self/mountinfo (field 5; octal escapes such as
# \040 decoded), in mount order.
mounts_under_dir() {
  local mp
  while read -r _ _ _ _ mp _; do
    mp=$(printf '%b' "$mp")
    if [[ $mp == "$DIR" || $mp == "$DIR"/* ]]; then
      echo "$mp"
    fi
  done </proc/self/mountinfo
}

for attempt in 1 2 3; do
  mapfile -t mps < <(mounts_under_dir)
  ((${#mps[@]})) || break
  log "unmounting ${#mps[@]} mount(s) under $DIR (pass $attempt)"
  for ((i = ${#mps[@]} - 1; i >= 0; i--)); do
    # Busy after all: detach it; the kernel frees it when the last user goes away.
    umount "${mps[i]}" 2>/dev/null || umount -l "${mps[i]}" 2>/dev/null || true
  done
done
mapfile -t mps < <(mounts_under_dir)
if ((${#mps[@]})); then
  echo "env-down: ERROR: still mounted: ${mps[*]}" >&2
  exit 1
fi

# --- remove ---------------------------------------------------------------------------------
# Keep the marker until last so a failed rm can be retried by running env-down again.
find "$DIR" -mindepth 1 -maxdepth 1 ! -name .kip-test-env -exec rm -rf {} + 2>/dev/null || true
if [[ -n $(find "$DIR" -mindepth 1 -maxdepth 1 ! -name .kip-test-env -print -quit) ]]; then
  echo "env-down: ERROR: could not remove everything under $DIR" >&2
  exit 1
fi
rm -rf "$DIR"
log "removed $DIR"
