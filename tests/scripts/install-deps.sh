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
echo "install-deps: ok"
