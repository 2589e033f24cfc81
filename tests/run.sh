#!/usr/bin/env bash
# Sets up and runs every test on a fresh Debian 12 machine: installs the packages, starts a real
# registry, containerd 1.6 and dockerd in a temporary directory of their own, runs the gates
# (fmt, clippy) and every test, and stops the components when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/scripts/install-deps.sh

echo "== gates: fmt, clippy"
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings

echo "== build"
cargo build --workspace --bins

DIR=$(mktemp -d /tmp/kip-test.XXXXXX)
# Quiet unless it fails, so the test totals stay the last line of the run.
cleanup() {
  local out
  out=$(bash tests/scripts/env-down.sh "$DIR" 2>&1) || echo "$out" >&2
}
trap cleanup EXIT INT TERM

echo "== components in $DIR"
bash tests/scripts/env-up.sh "$DIR"
# shellcheck disable=SC1091
source "$DIR/env"

# Upstream Enterprise Gateway (installed by install-deps.sh) for the gateway comparison tests.
EG_BIN=${KIP_TEST_EG_VENV:-/opt/kip-test/eg-venv}/bin/jupyter-enterprisegateway
[[ -x $EG_BIN ]] && export KIP_TEST_EG_BIN=$EG_BIN

echo "== tests"
# No doc-tests in the workspace; --lib --bins --tests runs every other test target.
LOG="$DIR/test.log"
set +e
cargo test --workspace --no-fail-fast --lib --bins --tests -- "$@" 2>&1 | tee "$LOG"
cargo_status=${PIPESTATUS[0]}

# Offline: renders the Helm chart with Helm's Go SDK, lints it and validates every manifest.
echo "== chart tests"
"${KIP_CHART_VENV:-/opt/kip-test/venv}/bin/python" -m pytest -q -p no:cacheprovider tests/chart 2>&1 | tee -a "$LOG"
chart_status=${PIPESTATUS[0]}

# The fake Kubernetes API server and node simulator the gateway's Kubernetes tests run against.
echo "== fake Kubernetes tests"
"${KIP_CHART_VENV:-/opt/kip-test/venv}/bin/python" -m pytest -q -p no:cacheprovider tests/fake-k8s 2>&1 | tee -a "$LOG"
fake_k8s_status=${PIPESTATUS[0]}
set -e

# One closing line with the totals over every test binary and the pytest suites.
awk '/^test result:/ { p += $4; f += $6 }
     / passed| failed/ && !/^test result:/ {
       for (i = 2; i <= NF; i++) {
         if ($i ~ /^passed/) p += $(i - 1)
         if ($i ~ /^failed/) f += $(i - 1)
       }
     }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$LOG"
((cargo_status == 0 && chart_status == 0 && fake_k8s_status == 0))
