#!/usr/bin/env bash
# Starts a private test environment for kip's end-to-end tests.
#
#   tests/scripts/env-up.sh DIR [registry] [registry-auth] [registry-token] [registry-tls] [containerd] [containerd2] [dockerd]
#
# Every component runs in the background with ALL of its state under DIR (which is
# created; it must not exist yet or be empty), listens only on 127.0.0.1 ports that
# were free and on unix sockets under DIR, so several environments can run side by
# side and next to any system daemons. With no component named, all three start.
#
#   registry    docker-registry (distribution 2.8), plain HTTP, deletes enabled,
#               access log of every request in its log file
#   registry-tls  docker-registry over HTTPS, its certificate signed by a test CA
#               (KIP_TEST_TLS_REGISTRY, KIP_TEST_TLS_REGISTRY_LOG, KIP_TEST_TLS_REGISTRY_CA)
#   containerd  containerd 1.6 with the CRI plugin (serves the CRI gRPC services on
#               the same socket), overlayfs snapshotter if overlay works under DIR
#   containerd2 containerd 2.x (Debian sid's package, unpacked by install-deps.sh under
#               /opt/kip-test/containerd2, or KIP_TEST_CONTAINERD2_ROOT) with its CRI
#               plugin, on its own socket
#   dockerd     dockerd 20.10 on its own socket, with its own containerd
#
# On success DIR/env holds `export` lines (source it):
#   KIP_TEST_DIR, KIP_TEST_COMPONENTS (what came up, space separated),
#   KIP_TEST_REGISTRY (127.0.0.1:PORT), KIP_TEST_REGISTRY_LOG,
#   KIP_TEST_CONTAINERD_SOCK, KIP_TEST_CONTAINERD_LOG, KIP_TEST_CONTAINERD_SNAPSHOTTER,
#   KIP_TEST_CONTAINERD2_SOCK, KIP_TEST_CONTAINERD2_LOG, KIP_TEST_CONTAINERD2_SNAPSHOTTER,
#   KIP_TEST_CONTAINERD2_CTR (the ctr that goes with it),
#   KIP_TEST_DOCKER_SOCK, KIP_TEST_DOCKER_LOG
# and DIR/<component>.pid the pids (stop everything with env-down.sh DIR).
#
# A component that does not come up within KIP_TEST_ENV_TIMEOUT seconds (default 60)
# is reported with the tail of its log. Under CI=true that is fatal (exit 1, the
# half-started DIR is left for env-down.sh); otherwise the component is stopped, a
# warning is printed, and its variables are left out of DIR/env so tests can skip.
set -euo pipefail

usage() {
  echo "usage: $0 DIR [registry] [registry-auth] [registry-token] [registry-tls] [containerd] [containerd2] [dockerd]" >&2
  exit 2
}

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { echo "env-up: $*" >&2; }

(($# >= 1)) || usage
dir_arg=$1
shift

# --- which components --------------------------------------------------------------
want_registry=false want_registry_auth=false want_registry_token=false want_registry_tls=false want_containerd=false want_containerd2=false want_dockerd=false
if (($# == 0)); then
  set -- registry registry-auth registry-token registry-tls containerd containerd2 dockerd
fi
for c in "$@"; do
  case $c in
    registry) want_registry=true ;;
    registry-auth) want_registry_auth=true ;;
    registry-token) want_registry_token=true ;;
    registry-tls) want_registry_tls=true ;;
    containerd) want_containerd=true ;;
    containerd2) want_containerd2=true ;;
    dockerd | docker) want_dockerd=true ;;
    *)
      echo "env-up: unknown component '$c'" >&2
      usage
      ;;
  esac
done

timeout_s=${KIP_TEST_ENV_TIMEOUT:-60}
in_ci=false
[[ ${CI:-} == true ]] && in_ci=true

# --- DIR -----------------------------------------------------------------------------
# Paths go into config files and are matched by env-down.sh, so keep them plain.
if [[ $dir_arg =~ [[:space:]\"\'\\] ]]; then
  echo "env-up: DIR must not contain whitespace, quotes or backslashes: '$dir_arg'" >&2
  exit 2
fi
if [[ -e $dir_arg && ! -d $dir_arg ]]; then
  echo "env-up: $dir_arg exists and is not a directory" >&2
  exit 2
fi
if [[ -d $dir_arg ]] && [[ -n $(ls -A "$dir_arg") ]]; then
  echo "env-up: $dir_arg is not empty (run env-down.sh on it first)" >&2
  exit 2
fi
# The longest unix socket path below is DIR/docker/containerd/containerd.sock.ttrpc;
# sun_path holds 107 bytes.
abs=$(realpath -m "$dir_arg")
if ((${#abs} + 42 > 107)); then
  echo "env-up: DIR path too long for unix sockets (${#abs} chars, max 65): $abs" >&2
  exit 2
fi
mkdir -p "$dir_arg"
DIR=$(cd "$dir_arg" && pwd -P)
if [[ $DIR == / ]]; then
  echo "env-up: refusing to use / as DIR" >&2
  exit 2
fi
# Marks DIR as ours: env-down.sh only removes directories that carry it.
echo "kip test environment, created $(date -u +%FT%TZ) by pid $$" >"$DIR/.kip-test-env"

# --- helpers ---------------------------------------------------------------------------

# Prints a TCP port on 127.0.0.1 that nothing uses right now. It is drawn from
# 20000-32767, below Linux's default ephemeral range, so outgoing connections do not
# take it before the daemon binds it; bind failures are retried by the callers.
free_port() {
  local used port i
  # Ports in any state (listening or connected), from the "local_address" column
  # (hex IP:PORT) of /proc/net/tcp{,6}.
  used=$(
    cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | while read -r _ local _; do
      if [[ $local == *:* ]]; then echo $((16#${local##*:})); fi
    done | sort -un
  )
  for ((i = 0; i < 200; i++)); do
    port=$((20000 + RANDOM % 12768))
    if ! grep -qx "$port" <<<"$used"; then
      echo "$port"
      return 0
    fi
  done
  echo "env-up: no free port found" >&2
  return 1
}

# start NAME LOG CMD...: runs CMD in the background in its own session (so a Ctrl-C
# or hang-up aimed at the caller does not reach it), with stdin from /dev/null and
# stdout+stderr appended to LOG; records its pid in DIR/NAME.pid and in $started_pid.
start() {
  local name=$1 logf=$2
  shift 2
  # The subshell closes every inherited descriptor above 2 (a caller's pipe held open
  # by a daemon would make that caller wait forever), then execs setsid, which does
  # not fork here (the background child is not a group leader): $! is the daemon.
  (
    for fd in /proc/self/fd/*; do
      fd=${fd##*/}
      # (The group keeps 2>/dev/null from applying to the rest of the subshell; the
      # glob's own descriptor is already closed and fails harmlessly.)
      if ((fd > 2)); then { exec {fd}>&-; } 2>/dev/null || true; fi
    done
    exec setsid "$@"
  ) </dev/null >>"$logf" 2>&1 &
  started_pid=$!
  echo "$started_pid" >"$DIR/$name.pid"
}

# wait_ready NAME PID LOG CMD...: polls CMD (output discarded) every 0.2 s until it
# succeeds. Fails early if PID exits, or after $timeout_s seconds.
wait_ready() {
  local name=$1 pid=$2 logf=$3
  shift 3
  local deadline=$((SECONDS + timeout_s))
  while ((SECONDS < deadline)); do
    if "$@" >/dev/null 2>&1; then
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      failure_reason="$name (pid $pid) exited"
      return 1
    fi
    sleep 0.2
  done
  failure_reason="$name did not answer within ${timeout_s}s"
  return 1
}

# Stops one pid we started (used when a component is given up outside CI).
stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.2
  done
  kill -KILL "$pid" 2>/dev/null || true
}

# failed NAME LOG [PID...]: reports a component that did not come up. Fatal under CI.
failed() {
  local name=$1 logf=$2
  shift 2
  {
    echo "env-up: ERROR: $name failed to start: ${failure_reason:-unknown reason}"
    if [[ -f $logf ]]; then
      echo "env-up: ---- last lines of $logf ----"
      tail -n 40 "$logf"
      echo "env-up: ----"
    fi
  } >&2
  if $in_ci; then
    echo "env-up: CI=true: giving up (run env-down.sh $DIR to clean up)" >&2
    exit 1
  fi
  local pid
  for pid in "$@"; do
    stop_pid "$pid"
  done
  log "WARNING: continuing without $name"
}

# bring_up NAME LOG START...: runs START (a start_* function and its arguments); when it succeeds
# NAME joins the components, otherwise it is reported with LOG and its pid in DIR/NAME.pid
# stopped (fatal under CI) and bring_up fails.
bring_up() {
  local name=$1 logf=$2
  shift 2
  if "$@"; then
    components+=("$name")
    return 0
  fi
  failed "$name" "$logf" "$(cat "$DIR/$name.pid" 2>/dev/null || true)"
  return 1
}

need() {
  local bin
  for bin in "$@"; do
    if ! command -v "$bin" >/dev/null 2>&1; then
      failure_reason="'$bin' not found in PATH (run tests/scripts/install-deps.sh)"
      return 1
    fi
  done
}

need_root() {
  if ((EUID != 0)); then
    failure_reason="must run as root"
    return 1
  fi
}

env_lines=()
components=()
failure_reason=

# --- registry ------------------------------------------------------------------------
# start_registry NAME [AUTH_YAML]: a docker-registry in DIR/NAME; sets started_registry_port.
started_registry_port=
registry_port= # the plain registry's port, once it is up
start_registry() {
  local name=$1 auth=${2:-} d=$DIR/$1 logf=$DIR/$1/registry.log attempt port
  mkdir -p "$d/data"
  : >"$logf"
  need docker-registry curl || return 1
  # A port can be taken between free_port and the bind: retry with another one.
  for attempt in 1 2 3; do
    port=$(free_port) || return 1
    # Access log (Apache combined format, on stdout) is on by default; spelled out so
    # nobody turns it off: tests grep it for `"GET /v2/<name>/blobs/sha256:...`.
    cat >"$d/config.yml" <<EOF
version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $d/data
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  secret: kip-test-env-secret
$auth
EOF
    echo "env-up: $name attempt $attempt on 127.0.0.1:$port" >>"$logf"
    start "$name" "$logf" docker-registry serve "$d/config.yml"
    # /v2/ answers 200 (401 with auth on): either way the registry is serving.
    if wait_ready "$name" "$started_pid" "$logf" \
      curl -sS --noproxy '*' -o /dev/null --max-time 2 "http://127.0.0.1:$port/v2/"; then
      started_registry_port=$port
      return 0
    fi
    stop_pid "$started_pid"
    grep -q 'address already in use' "$logf" || return 1
  done
  return 1
}

# The registry with htpasswd auth: fixed test credentials, with a password whose base64
# forms hold '+' and '/' (what a client sending standard instead of URL-safe base64 breaks on).
AUTH_USER=kip
AUTH_PASSWORD='k1p?>~?>>??>>>/+'
start_auth_registry() {
  need htpasswd || return 1
  mkdir -p "$DIR/registry-auth"
  htpasswd -Bbn "$AUTH_USER" "$AUTH_PASSWORD" >"$DIR/registry-auth/htpasswd" || return 1
  start_registry registry-auth "auth:
  htpasswd:
    realm: kip-test
    path: $DIR/registry-auth/htpasswd"
}

# The registry with Bearer-token auth, as Docker Hub works: a challenge names the test token
# issuer (tests/scripts/token-issuer.py), which signs JWTs with a test key the registry trusts.
# Anonymous clients get pull tokens for `public/` repositories; the test user gets everything.
start_token_registry() {
  local d=$DIR/registry-token port logf
  need openssl curl || return 1
  mkdir -p "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=kip-test-token-issuer \
    -keyout "$d/key.pem" -out "$d/cert.pem" >/dev/null 2>&1 || return 1
  port=$(free_port) || return 1
  logf=$d/issuer.log
  start token-issuer "$logf" python3 "$SCRIPT_DIR/token-issuer.py" "$port" "$d/key.pem" \
    "$d/cert.pem" "$AUTH_USER" "$AUTH_PASSWORD" kip-test-registry kip-test-issuer
  wait_ready token-issuer "$started_pid" "$logf" \
    curl -fsS --noproxy '*' -o /dev/null --max-time 2 "http://127.0.0.1:$port/token" || return 1
  token_issuer_port=$port
  start_registry registry-token "auth:
  token:
    realm: http://127.0.0.1:$port/token
    service: kip-test-registry
    issuer: kip-test-issuer
    rootcertbundle: $d/cert.pem"
}

# A registry serving HTTPS on 127.0.0.1 with a certificate (IP 127.0.0.1, DNS localhost) signed
# by a test CA of its own, which no system trust store holds: DIR/registry-tls/ca.pem.
start_tls_registry() {
  local d=$DIR/registry-tls
  need openssl || return 1
  mkdir -p "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=kip-test-ca \
    -keyout "$d/ca-key.pem" -out "$d/ca.pem" >/dev/null 2>&1 || return 1
  openssl req -newkey rsa:2048 -nodes -subj /CN=localhost \
    -keyout "$d/key.pem" -out "$d/server.csr" >/dev/null 2>&1 || return 1
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$d/ext.cnf"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca-key.pem" \
    -CAcreateserial -days 2 -extfile "$d/ext.cnf" -out "$d/cert.pem" >/dev/null 2>&1 || return 1
  # Indented into the http: block of the registry's config.
  start_registry registry-tls "  tls:
    certificate: $d/cert.pem
    key: $d/key.pem"
}

# --- containerd ---------------------------------------------------------------------------

# Overlay is what kip meets on real nodes; it does not work when DIR itself is on
# overlayfs (docker-in-docker) and some other filesystems. Try a real mount.
overlay_works() {
  local t=$DIR/overlay-probe rc=1
  mkdir -p "$t/lower" "$t/upper" "$t/work" "$t/merged"
  if mount -t overlay overlay -o "lowerdir=$t/lower,upperdir=$t/upper,workdir=$t/work" \
    "$t/merged" 2>/dev/null; then
    umount "$t/merged" && rc=0
  fi
  rm -rf "$t"
  return "$rc"
}

# containerd_config_head FILE BASE VERSION DISABLED: what every containerd config here starts
# with (config VERSION, DISABLED plugins, every path and socket under BASE, metrics and debug
# endpoints off, the opt plugin's path), up to the [plugins] table.
containerd_config_head() {
  local file=$1 base=$2 version=$3 disabled=$4
  cat >"$file" <<EOF
version = $version
root = "$base/root"
state = "$base/state"
temp = "$base/tmp"
disabled_plugins = [$disabled]
required_plugins = []
oom_score = 0

[grpc]
  address = "$base/containerd.sock"
  tcp_address = ""

[ttrpc]
  address = "$base/containerd.sock.ttrpc"

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$base/opt"
EOF
}

# write_containerd_config FILE BASE WITH_CRI SNAPSHOTTER: a containerd 1.6 config whose
# every path is under BASE. Paths a plugin does not take from root/state must be set
# explicitly (opt plugin, CNI dirs), or they fall back to the system ones.
write_containerd_config() {
  local file=$1 base=$2 with_cri=$3 snapshotter=$4 disabled
  # Snapshotters that cannot work here would only log errors at startup. (The old
  # io.containerd.runtime.v1.linux must stay: the tasks service, and so CRI, need it.)
  disabled='"io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"'
  if ! $with_cri; then
    disabled+=', "io.containerd.grpc.v1.cri"'
  fi
  containerd_config_head "$file" "$base" 2 "$disabled"
  cat >>"$file" <<EOF

  [plugins."io.containerd.snapshotter.v1.overlayfs"]
    root_path = ""

EOF
  if $with_cri; then
    # The CRI plugin keeps its own root and state in <root>/io.containerd.grpc.v1.cri
    # and <state>/io.containerd.grpc.v1.cri (containerd 1.6 has no key for them).
    cat >>"$file" <<EOF
  [plugins."io.containerd.grpc.v1.cri"]
    disable_tcp_service = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_selinux = false
    disable_apparmor = true
    sandbox_image = "registry.k8s.io/pause:3.6"
    netns_mounts_under_state_dir = true
    max_concurrent_downloads = 3

    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "$snapshotter"
      default_runtime_name = "runc"
      disable_snapshot_annotations = true

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"

        # runc's state would default to /run/containerd/runc/<namespace>, shared
        # with every other containerd.
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          Root = "$base/runc"

    # No CNI plugins are installed: pod sandboxes cannot get networking, images can
    # still be pulled. Empty private dirs keep the system's CNI config out.
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "$base/cni/bin"
      conf_dir = "$base/cni/net.d"

    # hosts.toml files per registry (\`certs.d/HOST:PORT/hosts.toml\`); env-up writes
    # one that makes the test registry plain HTTP.
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = "$base/certs.d"
EOF
  fi
}

containerd_snapshotter=
start_containerd() {
  local d=$DIR/containerd logf=$DIR/containerd/containerd.log
  mkdir -p "$d/root" "$d/state" "$d/tmp" "$d/opt" "$d/cni/bin" "$d/cni/net.d" "$d/certs.d"
  : >"$logf"
  need containerd ctr runc containerd-shim-runc-v2 || return 1
  need_root || return 1
  if [[ -n ${KIP_TEST_SNAPSHOTTER:-} ]]; then
    containerd_snapshotter=$KIP_TEST_SNAPSHOTTER
  elif overlay_works; then
    containerd_snapshotter=overlayfs
  else
    containerd_snapshotter=native
    log "WARNING: overlay mounts do not work under $DIR; containerd uses the native snapshotter"
  fi
  write_containerd_config "$d/config.toml" "$d" true "$containerd_snapshotter"
  if [[ -n $registry_port ]]; then
    write_hosts_toml "$d/certs.d" "127.0.0.1:$registry_port"
  fi
  start containerd "$logf" containerd --config "$d/config.toml" --log-level info
  local pid=$started_pid
  wait_ready containerd "$pid" "$logf" ctr --address "$d/containerd.sock" version || return 1
  # containerd keeps running when the CRI plugin fails to load (e.g. no snapshotter),
  # so check that it did load.
  if ! ctr --address "$d/containerd.sock" plugins ls 2>/dev/null |
    awk '$1 == "io.containerd.grpc.v1" && $2 == "cri" && $NF == "ok" { f = 1 } END { exit !f }'; then
    failure_reason="containerd is up but its CRI plugin did not load (see 'ctr plugins ls')"
    return 1
  fi
}

# write_hosts_toml CERTS_D HOST:PORT: tells containerd's CRI plugin to use plain HTTP.
write_hosts_toml() {
  mkdir -p "$1/$2"
  cat >"$1/$2/hosts.toml" <<EOF
server = "http://$2"

[host."http://$2"]
  capabilities = ["pull", "resolve", "push"]
  skip_verify = true
EOF
}

# --- containerd 2.x ----------------------------------------------------------------------------
CD2_ROOT=${KIP_TEST_CONTAINERD2_ROOT:-/opt/kip-test/containerd2}

# write_containerd2_config FILE BASE SNAPSHOTTER: a containerd 2.x config (version 3: the
# CRI plugin is split into cri.v1.images and cri.v1.runtime) with every path under BASE.
write_containerd2_config() {
  local file=$1 base=$2 snapshotter=$3
  containerd_config_head "$file" "$base" 3 '"io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.erofs",
  "io.containerd.snapshotter.v1.blockfile", "io.containerd.nri.v1.nri"'
  cat >>"$file" <<EOF

  [plugins."io.containerd.grpc.v1.cri"]
    disable_tcp_service = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"

  [plugins."io.containerd.cri.v1.images"]
    snapshotter = "$snapshotter"
    max_concurrent_downloads = 3

    [plugins."io.containerd.cri.v1.images".registry]
      config_path = "$base/certs.d"

  [plugins."io.containerd.cri.v1.runtime"]
    enable_selinux = false
    disable_apparmor = true
    netns_mounts_under_state_dir = true

    [plugins."io.containerd.cri.v1.runtime".containerd]
      default_runtime_name = "runc"

      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"

        [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
          Root = "$base/runc"

    [plugins."io.containerd.cri.v1.runtime".cni]
      bin_dirs = ["$base/cni/bin"]
      conf_dir = "$base/cni/net.d"
EOF
}

containerd2_snapshotter=
start_containerd2() {
  local d=$DIR/cd2 logf=$DIR/cd2/containerd.log snapshotter
  mkdir -p "$d/root" "$d/state" "$d/tmp" "$d/opt" "$d/cni/bin" "$d/cni/net.d" "$d/certs.d"
  : >"$logf"
  need runc || return 1
  need_root || return 1
  if [[ ! -x $CD2_ROOT/usr/bin/containerd || ! -x $CD2_ROOT/usr/bin/ctr ]]; then
    failure_reason="containerd 2.x not found under $CD2_ROOT (run tests/scripts/install-deps.sh)"
    return 1
  fi
  snapshotter=${containerd_snapshotter:-}
  if [[ -z $snapshotter ]]; then
    if [[ -n ${KIP_TEST_SNAPSHOTTER:-} ]]; then
      snapshotter=$KIP_TEST_SNAPSHOTTER
    elif overlay_works; then snapshotter=overlayfs; else snapshotter=native; fi
  fi
  containerd2_snapshotter=$snapshotter
  write_containerd2_config "$d/config.toml" "$d" "$snapshotter"
  if [[ -n $registry_port ]]; then
    write_hosts_toml "$d/certs.d" "127.0.0.1:$registry_port"
  fi
  # Its own shim (first on PATH) goes with it, not the system's 1.6 one.
  start containerd2 "$logf" env PATH="$CD2_ROOT/usr/bin:$PATH" \
    "$CD2_ROOT/usr/bin/containerd" --config "$d/config.toml" --log-level info
  local pid=$started_pid
  wait_ready containerd2 "$pid" "$logf" \
    "$CD2_ROOT/usr/bin/ctr" --address "$d/containerd.sock" version || return 1
  if ! "$CD2_ROOT/usr/bin/ctr" --address "$d/containerd.sock" plugins ls 2>/dev/null |
    awk '$1 == "io.containerd.grpc.v1" && $2 == "cri" && $NF == "ok" { f = 1 } END { exit !f }'; then
    failure_reason="containerd 2.x is up but its CRI plugin did not load (see 'ctr plugins ls')"
    return 1
  fi
}

# --- dockerd ---------------------------------------------------------------------------------
start_dockerd() {
  local d=$DIR/docker logf=$DIR/docker/docker.log
  local cd=$DIR/docker/containerd cdlog=$DIR/docker/containerd/containerd.log
  mkdir -p "$d/data" "$d/exec" "$cd/root" "$cd/state" "$cd/tmp" "$cd/opt"
  : >"$logf"
  : >"$cdlog"
  need dockerd docker containerd ctr runc containerd-shim-runc-v2 || return 1
  need_root || return 1
  # dockerd only starts a containerd of its own when /run/containerd/containerd.sock
  # does not exist; otherwise it would use (and leave containers in) the system one.
  # So it gets its own containerd, started here, without the CRI plugin.
  write_containerd_config "$cd/config.toml" "$cd" false overlayfs
  start docker-containerd "$cdlog" containerd --config "$cd/config.toml" --log-level info
  docker_containerd_pid=$started_pid
  if ! wait_ready docker-containerd "$docker_containerd_pid" "$cdlog" \
    ctr --address "$cd/containerd.sock" version; then
    failure_reason="dockerd's containerd: $failure_reason"
    dockerd_log_for_failure=$cdlog
    return 1
  fi
  # Without --config-file dockerd would read /etc/docker/daemon.json; without
  # "deprecated-key-path" (a daemon.json-only key in 20.10) it would write its
  # identity key to /etc/docker/key.json.
  printf '{\n  "deprecated-key-path": "%s"\n}\n' "$d/key.json" >"$d/daemon.json"
  start dockerd "$logf" dockerd \
    --config-file "$d/daemon.json" \
    --host "unix://$d/docker.sock" \
    --data-root "$d/data" \
    --exec-root "$d/exec" \
    --pidfile "$d/docker.pid" \
    --containerd "$cd/containerd.sock" \
    --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
    --bridge=none --userland-proxy=false \
    --log-level info
  dockerd_pid=$started_pid
  wait_ready dockerd "$dockerd_pid" "$logf" docker -H "unix://$d/docker.sock" version || return 1
}

# registry_env VAR NAME: the variables of the registry that just came up as NAME: VAR (its
# 127.0.0.1:PORT) and VAR_LOG.
registry_env() {
  env_lines+=("export $1=127.0.0.1:$started_registry_port" "export ${1}_LOG=$DIR/$2/registry.log")
}

# credentials_env: the test user the registries with auth accept.
credentials_env() {
  env_lines+=("export KIP_TEST_AUTH_USER=$AUTH_USER" "export KIP_TEST_AUTH_PASSWORD='$AUTH_PASSWORD'")
}

# --- main --------------------------------------------------------------------------------------
t0=$SECONDS
env_lines+=("export KIP_TEST_DIR=$DIR")

if $want_registry && bring_up registry "$DIR/registry/registry.log" start_registry registry; then
  registry_port=$started_registry_port
  registry_env KIP_TEST_REGISTRY registry
  log "registry up at 127.0.0.1:$registry_port ($((SECONDS - t0))s)"
fi

if $want_registry_auth && bring_up registry-auth "$DIR/registry-auth/registry.log" start_auth_registry; then
  registry_env KIP_TEST_AUTH_REGISTRY registry-auth
  credentials_env
  log "registry with htpasswd auth up at 127.0.0.1:$started_registry_port ($((SECONDS - t0))s)"
fi

if $want_registry_token && bring_up registry-token "$DIR/registry-token/registry.log" start_token_registry; then
  registry_env KIP_TEST_TOKEN_REGISTRY registry-token
  env_lines+=("export KIP_TEST_TOKEN_ISSUER_LOG=$DIR/registry-token/issuer.log")
  credentials_env
  log "registry with token auth up at 127.0.0.1:$started_registry_port, issuer at 127.0.0.1:$token_issuer_port ($((SECONDS - t0))s)"
fi

if $want_registry_tls && bring_up registry-tls "$DIR/registry-tls/registry.log" start_tls_registry; then
  registry_env KIP_TEST_TLS_REGISTRY registry-tls
  env_lines+=("export KIP_TEST_TLS_REGISTRY_CA=$DIR/registry-tls/ca.pem")
  log "registry with TLS (test CA) up at 127.0.0.1:$started_registry_port ($((SECONDS - t0))s)"
fi

if $want_containerd && bring_up containerd "$DIR/containerd/containerd.log" start_containerd; then
  env_lines+=("export KIP_TEST_CONTAINERD_SOCK=$DIR/containerd/containerd.sock"
    "export KIP_TEST_CONTAINERD_LOG=$DIR/containerd/containerd.log"
    "export KIP_TEST_CONTAINERD_SNAPSHOTTER=$containerd_snapshotter")
  log "containerd up at $DIR/containerd/containerd.sock, snapshotter $containerd_snapshotter ($((SECONDS - t0))s)"
fi

if $want_containerd2 && bring_up containerd2 "$DIR/cd2/containerd.log" start_containerd2; then
  env_lines+=("export KIP_TEST_CONTAINERD2_SOCK=$DIR/cd2/containerd.sock"
    "export KIP_TEST_CONTAINERD2_LOG=$DIR/cd2/containerd.log"
    "export KIP_TEST_CONTAINERD2_SNAPSHOTTER=$containerd2_snapshotter"
    "export KIP_TEST_CONTAINERD2_CTR=$CD2_ROOT/usr/bin/ctr")
  log "containerd 2.x up at $DIR/cd2/containerd.sock, snapshotter $containerd2_snapshotter ($((SECONDS - t0))s)"
fi

if $want_dockerd; then
  docker_containerd_pid='' dockerd_pid='' dockerd_log_for_failure=$DIR/docker/docker.log
  if start_dockerd; then
    components+=(dockerd)
    env_lines+=("export KIP_TEST_DOCKER_SOCK=$DIR/docker/docker.sock"
      "export KIP_TEST_DOCKER_LOG=$DIR/docker/docker.log")
    log "dockerd up at $DIR/docker/docker.sock ($((SECONDS - t0))s)"
  else
    # Stop dockerd before its containerd.
    failed dockerd "$dockerd_log_for_failure" "$dockerd_pid" "$docker_containerd_pid"
  fi
fi

env_lines+=("export KIP_TEST_COMPONENTS=\"${components[*]}\"")
printf '%s\n' "${env_lines[@]}" >"$DIR/env.tmp"
mv "$DIR/env.tmp" "$DIR/env"
log "ready in $((SECONDS - t0))s: ${components[*]:-nothing} (source $DIR/env)"
