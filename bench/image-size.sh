#!/usr/bin/env bash
# Checks what can be checked of the container images without a Docker engine or the base images:
#
# 1. builds the release binaries exactly as Dockerfile.kip and Dockerfile.gateway do (static-pie,
#    glibc linked in, release profile with LTO and strip);
# 2. checks with readelf that they need no shared library and no program interpreter, so
#    distroless/static (which has no libc) satisfies them;
# 3. runs them in an empty root holding only the files distroless/static provides that matter
#    here (/etc/passwd, /etc/group, /etc/nsswitch.conf, /etc/hosts, CA certificates): `kip --once`
#    resolves a gateway name through /etc/hosts and completes a cycle against a local HTTP
#    server; the gateway runs as the nonroot user 65532;
# 4. reports the binaries' sizes and the estimated image sizes against the targets.
#
# Needs root (chroot). Exits 1 if a check fails or an estimate exceeds its target.
set -euo pipefail
cd "$(dirname "$0")/.."

# gcr.io/distroless/static-debian12 is "around 2 MiB" (GoogleContainerTools/distroless README,
# "Distroless images are very small"); the :nonroot tag has the same content with USER 65532.
BASE_BYTES=$((2 * 1024 * 1024))
KIP_TARGET_MB=25
GATEWAY_TARGET_MB=40

TARGET="$(uname -m)-unknown-linux-gnu"
echo "== release build ($TARGET, +crt-static, as in the Dockerfiles)"
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --locked --target "$TARGET" -p kip -p gateway
BIN="${CARGO_TARGET_DIR:-target}/$TARGET/release"

fail=0
check() { # message, then the command
  local msg=$1
  shift
  if "$@"; then echo "  ok: $msg"; else echo "  FAILED: $msg"; fail=1; fi
}

echo "== shared-library needs (runtime base: distroless/static, no libc)"
for b in kip gateway; do
  needed=$(readelf -d "$BIN/$b" | awk '/\(NEEDED\)/ {print $NF}' | tr -d '[]' | paste -sd, -)
  interp=$(readelf -l "$BIN/$b" | grep -c 'program interpreter' || true)
  echo "  $b: NEEDED=[${needed}] interpreter=$interp"
  check "$b needs no shared library" test -z "$needed"
  check "$b has no program interpreter" test "$interp" -eq 0
done

echo "== run in an empty root (what distroless/static provides)"
ROOT=$(mktemp -d /tmp/kip-image-root.XXXXXX)
chmod 755 "$ROOT"
CHROOT=$(command -v chroot)
SERVER_PID=
cleanup() {
  [[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null || true
  rm -rf "$ROOT"
}
trap cleanup EXIT
mkdir -p "$ROOT/etc/ssl/certs" "$ROOT/usr/local/bin" "$ROOT/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$ROOT/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$ROOT/etc/group"
printf 'hosts: files dns\n' >"$ROOT/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n127.0.0.1 enterprise-gateway.image-check\n' >"$ROOT/etc/hosts"
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/"
cp "$BIN/kip" "$BIN/gateway" "$ROOT/usr/local/bin/"

PORT_FILE="$ROOT/tmp/port"
python3 - "$PORT_FILE" <<'EOF' &
import http.server, json, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"default": "python3", "kernelspecs": {}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
open(sys.argv[1], "w").write(str(server.server_port))
server.serve_forever()
EOF
SERVER_PID=$!
for _ in $(seq 50); do [[ -s $PORT_FILE ]] && break; sleep 0.1; done
PORT=$(cat "$PORT_FILE")

check "kip --version runs" chroot "$ROOT" /usr/local/bin/kip --version
check "kip --once resolves the gateway by name and completes a cycle" \
  env -i KIP_GATEWAY_HOST="http://enterprise-gateway.image-check:$PORT" \
  KIP_CRI_ENDPOINT=unix:///run/containerd/containerd.sock KIP_LOG_LEVEL=WARNING \
  "$CHROOT" "$ROOT" /usr/local/bin/kip --once
# chroot exits 125-127 when the program cannot be started; timeout 124 when it is still serving.
rc=0
timeout 2 "$CHROOT" --userspec=65532:65532 "$ROOT" /usr/local/bin/gateway >/dev/null 2>&1 || rc=$?
check "gateway starts as user 65532 (exit $rc)" test "$rc" -lt 125 -o "$rc" -eq 124

echo "== sizes"
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1000000 }'; }
printf '  %-8s %12s %14s %14s %10s\n' image binary_MB gzip_layer_MB est_image_MB target_MB
for pair in "kip:$KIP_TARGET_MB" "gateway:$GATEWAY_TARGET_MB"; do
  b=${pair%%:*}
  target=${pair##*:}
  size=$(stat -c %s "$BIN/$b")
  gz=$(gzip -9 -c "$BIN/$b" | wc -c)
  est=$((size + BASE_BYTES))
  printf '  %-8s %12s %14s %14s %10s\n' "$b" "$(mb "$size")" "$(mb "$gz")" "$(mb "$est")" "$target"
  check "$b image estimate under $target MB" test "$est" -lt $((target * 1000000))
done
echo "  (estimate = binary + distroless/static base, $(mb $BASE_BYTES) MB, uncompressed)"

if ((fail)); then
  echo "image-size: FAILED"
  exit 1
fi
echo "image-size: ok"
