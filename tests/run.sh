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
cleanup() { bash tests/scripts/env-down.sh "$DIR" || true; }
trap cleanup EXIT INT TERM

echo "== components in $DIR"
bash tests/scripts/env-up.sh "$DIR"
# shellcheck disable=SC1091
source "$DIR/env"

echo "== tests"
cargo test --workspace -- "$@"

# Offline: renders the Helm chart with Helm's Go SDK, lints it and validates every manifest.
echo "== chart tests"
"${KIP_CHART_VENV:-/opt/kip-test/venv}/bin/python" -m pytest -q -p no:cacheprovider tests/chart
