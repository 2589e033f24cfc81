#!/usr/bin/env bash
# Installs the system packages the build and the end-to-end tests need (Debian 12).
# Idempotent: packages already present are not reinstalled.
set -euo pipefail

PKGS=(
  protobuf-compiler   # containerd-client and k8s-cri run protoc in build.rs
  docker-registry     # OCI registry on 127.0.0.1
  containerd          # containerd 1.6 with the CRI plugin
  docker.io           # Docker Engine (dockerd), started by the test scripts
  skopeo umoci        # build and push test images
  busybox-static      # static /bin/sh rootfs for the test images' base layer
  time                # /usr/bin/time for peak RSS in benchmarks
  jq curl bc
  apache2-utils       # htpasswd for the registry with basic auth
  openssl             # reproducible incompressible data for the test images
  wrk                 # HTTP load generator for the gateway benchmark
  python3-venv        # the chart tests' and the upstream-gateway comparison's virtual environments
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Debian starts services on install; the tests run their own instances, so keep them off.
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi

# Upstream Enterprise Gateway, only to compare the gateway's answers with it (tests and benchmark).
# Pinned so that the comparison is reproducible; Debian's python3, not whatever is first on PATH.
EG_VENV=${KIP_TEST_EG_VENV:-/opt/kip-test/eg-venv}
EG_VERSION=3.3.0
if [[ $("$EG_VENV/bin/pip" show jupyter_enterprise_gateway 2>/dev/null | sed -n "s/^Version: //p") != "$EG_VERSION" ]]; then
  echo "install-deps: installing jupyter_enterprise_gateway $EG_VERSION into $EG_VENV"
  /usr/bin/python3 -m venv "$EG_VENV"
  "$EG_VENV/bin/pip" install -q --disable-pip-version-check "jupyter_enterprise_gateway==$EG_VERSION"
fi

# Chart tests: Helm's Go SDK (helm-python-sdk renders and lints offline), Kubernetes schemas
# (kubernetes-validate bundles them), pytest. Versions pinned; reinstalled only when they change.
CHART_VENV=${KIP_CHART_VENV:-/opt/kip-test/venv}
CHART_PKGS=(helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 pytest==9.2.0 PyYAML==6.0.3)
stamp="$CHART_VENV/.kip-packages"
if [[ ! -x "$CHART_VENV/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "${CHART_PKGS[*]}" ]]; then
  echo "install-deps: chart test environment in $CHART_VENV"
  mkdir -p "$(dirname "$CHART_VENV")"
  /usr/bin/python3 -m venv "$CHART_VENV"
  "$CHART_VENV/bin/pip" install -q "${CHART_PKGS[@]}"
  echo "${CHART_PKGS[*]}" >"$stamp"
fi


# containerd 2.x for the containerd backend's tests: Debian sid's package, fetched through a
# private apt configuration (the machine's own sources stay untouched) and unpacked with
# `dpkg -x` under $CD2_ROOT; its binaries need only libc. Cached: done once per machine.
CD2_BASE=${KIP_TEST_CD2_BASE:-/opt/kip-test}
CD2_ROOT=$CD2_BASE/containerd2
if [[ ! -x $CD2_ROOT/usr/bin/containerd ]]; then
  echo "install-deps: fetching containerd 2.x from Debian sid into $CD2_ROOT"
  sid=$CD2_BASE/sid
  mkdir -p "$sid/lists/partial" "$sid/archives/partial" "$sid/etc"
  cat >"$sid/etc/sid.sources" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt_sid=(apt-get -qq
    -o Dir::Etc::SourceList="$sid/etc/sid.sources"
    -o Dir::Etc::SourceParts=/dev/null
    -o Dir::State::Lists="$sid/lists"
    -o Dir::Cache::Archives="$sid/archives"
    -o Dir::Cache::pkgcache="" -o Dir::Cache::srcpkgcache=""
    -o APT::Architecture=amd64 -o APT::Sandbox::User=root)
  "${apt_sid[@]}" update
  (cd "$sid/archives" && "${apt_sid[@]}" download containerd)
  deb=$(ls -t "$sid"/archives/containerd_*.deb | head -1)
  rm -rf "$CD2_ROOT.tmp"
  dpkg -x "$deb" "$CD2_ROOT.tmp"
  rm -rf "$CD2_ROOT"
  mv "$CD2_ROOT.tmp" "$CD2_ROOT"
fi
echo "install-deps: containerd 2.x: $("$CD2_ROOT/usr/bin/containerd" --version)"
echo "install-deps: ok"
