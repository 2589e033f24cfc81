#!/usr/bin/env bash
# Builds multi-layer OCI test images with umoci (no docker build) and pushes them to
# a plain-HTTP registry with skopeo.
#
#   tests/scripts/build-images.sh REGISTRY PREFIX COUNT [DATA_MB]
#       Pushes REGISTRY/PREFIX-<i>:1 for i in 1..COUNT, e.g.
#       build-images.sh 127.0.0.1:5000 test/kernel 3 -> 127.0.0.1:5000/test/kernel-1:1 ...
#       Each image (linux/amd64, Cmd ["/bin/sh"], label kip.test.kernel-id=<i>) has:
#         1. a base layer with identical bytes in every image (and every run): a static
#            busybox rootfs (/bin/sh, /bin/echo, ... as symlinks to /bin/busybox), so
#            `/bin/sh -c 'echo hi'` runs in a container;
#         2. DATA_MB (default 2) MiB of incompressible data unique to the image, in
#            /kernel-data.bin;
#         3. a small layer with /kernel-id holding "<i>\n".
#
#   tests/scripts/build-images.sh --retag REGISTRY SRC DST
#       Copies REGISTRY/SRC to REGISTRY/DST (both NAME:TAG), keeping the manifest
#       digest: "moves" DST to the image SRC points at.
#
# The pushed references go to stdout, one per line (in order); logs go to stderr.
#
# Builds are reproducible: timestamps are fixed and the data is an AES-CTR keystream
# seeded with "PREFIX-<i>" (plus KIP_TEST_IMAGE_SEED if set), so the same arguments
# give the same digests. Other knobs:
#   KIP_TEST_IMAGE_FORMAT  oci (default) or v2s2: manifest type pushed (skopeo --format)
#   KIP_TEST_PUSH_JOBS     parallel pushes (default 4)
set -euo pipefail

log() { echo "build-images: $*" >&2; }
die() {
  echo "build-images: ERROR: $*" >&2
  exit 1
}
usage() {
  {
    echo "usage: $0 REGISTRY PREFIX COUNT [DATA_MB]"
    echo "       $0 --retag REGISTRY SRC DST"
  } >&2
  exit 2
}

for bin in skopeo umoci tar openssl; do
  command -v "$bin" >/dev/null 2>&1 || die "'$bin' not found in PATH (run tests/scripts/install-deps.sh)"
done

# skopeo options common to all copies: no signature policy file needed, plain HTTP
# (with TLS verification off, containers/image falls back to http://), a few retries.
SKOPEO_COPY=(skopeo --insecure-policy copy --retry-times 2)
# KIP_TEST_PUSH_CREDS=user:password pushes to a registry that requires authentication.
DEST_CREDS=()
if [[ -n ${KIP_TEST_PUSH_CREDS:-} ]]; then DEST_CREDS=(--dest-creds "$KIP_TEST_PUSH_CREDS"); fi

# --- --retag --------------------------------------------------------------------------------
if [[ ${1:-} == --retag ]]; then
  (($# == 4)) || usage
  registry=$2 src=$3 dst=$4
  [[ $src == *:* && $dst == *:* ]] || die "SRC and DST must be NAME:TAG (got '$src', '$dst')"
  log "retagging $registry/$src -> $registry/$dst"
  if ! out=$("${SKOPEO_COPY[@]}" --preserve-digests --src-tls-verify=false --dest-tls-verify=false \
    "docker://$registry/$src" "docker://$registry/$dst" 2>&1); then
    echo "$out" >&2
    die "retag failed"
  fi
  echo "$registry/$dst"
  exit 0
fi

# --- arguments ---------------------------------------------------------------------------------
(($# == 3 || $# == 4)) || usage
registry=$1 prefix=$2 count=$3 data_mb=${4:-2}
if ! [[ $count =~ ^[0-9]+$ ]] || ((count < 1)); then
  die "COUNT must be a positive integer (got '$count')"
fi
[[ $data_mb =~ ^[0-9]+$ ]] || die "DATA_MB must be a non-negative integer (got '$data_mb')"
# Repository names: lowercase path components (OCI distribution spec).
[[ $prefix =~ ^[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$ ]] ||
  die "PREFIX must be a lowercase repository path such as test/kernel (got '$prefix')"
format=${KIP_TEST_IMAGE_FORMAT:-oci}
[[ $format == oci || $format == v2s2 ]] || die "KIP_TEST_IMAGE_FORMAT must be oci or v2s2"
jobs=${KIP_TEST_PUSH_JOBS:-4}

# Everything reproducible uses this instant (2024-01-01T00:00:00Z).
epoch=1704067200
created=2024-01-01T00:00:00Z

work=$(mktemp -d "${TMPDIR:-/tmp}/kip-build-images.XXXXXX")
push_pids=()
cleanup() {
  local pid
  for pid in "${push_pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

# tar_dir SRC OUT: a reproducible uncompressed layer tar of SRC's contents (no "./"
# prefix, sorted, fixed owner and mtime, no atime/ctime).
tar_dir() {
  local src=$1 out=$2 entries
  mapfile -t entries < <(cd "$src" && find . -mindepth 1 -maxdepth 1 -printf '%P\n' | LC_ALL=C sort)
  tar --create --file "$out" --directory "$src" --format=gnu --sort=name \
    --mtime="@$epoch" --owner=0 --group=0 --numeric-owner "${entries[@]}"
}

t0=$SECONDS
layout=$work/oci
umoci init --layout "$layout"

# --- base layer: a static busybox rootfs, built once ----------------------------------------
busybox=$(command -v busybox || true)
[[ -n $busybox ]] || die "busybox not found (install the busybox-static package)"
# (ldd exits 1 for a static binary.)
if [[ $(LC_ALL=C ldd "$busybox" 2>&1 || true) != *"not a dynamic executable"* ]]; then
  die "$busybox is dynamically linked (install busybox-static instead of busybox)"
fi
root=$work/base-rootfs
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp,proc,sys,dev}
install -m 0755 "$busybox" "$root/bin/busybox"
while read -r applet; do
  applet=${applet#/}
  [[ -n $applet && ! -e $root/$applet && ! -L $root/$applet ]] || continue
  mkdir -p "$root/$(dirname "$applet")"
  ln -s /bin/busybox "$root/$applet"
done < <("$busybox" --list-full)
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
find "$root" -type d -exec chmod 0755 {} +
chmod 1777 "$root/tmp"
chmod 0644 "$root/etc/passwd" "$root/etc/group"
tar_dir "$root" "$work/base.tar"

umoci new --image "$layout:base"
umoci config --image "$layout:base" --no-history --created "$created" \
  --os linux --architecture amd64 \
  --config.cmd /bin/sh --config.env PATH=/usr/sbin:/usr/bin:/sbin:/bin
umoci raw add-layer --image "$layout:base" --history.created "$created" \
  --history.created_by "kip test image: busybox base" "$work/base.tar"
log "base layer ready ($(stat -c %s "$work/base.tar") bytes uncompressed)"

# --- per-image layers ---------------------------------------------------------------------------
for ((i = 1; i <= count; i++)); do
  tag=image-$i
  d=$work/data-$i
  mkdir -p "$d"
  # AES-256-CTR keystream over zeros: incompressible and reproducible from the seed.
  head -c $((data_mb * 1024 * 1024)) /dev/zero |
    openssl enc -aes-256-ctr -nosalt -pbkdf2 -pass "pass:${KIP_TEST_IMAGE_SEED:-}$prefix-$i" \
      -out "$d/kernel-data.bin"
  chmod 0644 "$d/kernel-data.bin"
  tar_dir "$d" "$work/data-$i.tar"

  mkdir -p "$work/id-$i"
  echo "$i" >"$work/id-$i/kernel-id"
  chmod 0644 "$work/id-$i/kernel-id"
  tar_dir "$work/id-$i" "$work/id-$i.tar"

  umoci raw add-layer --image "$layout:base" --tag "$tag" --history.created "$created" \
    --history.created_by "kip test image: ${data_mb} MiB of data" "$work/data-$i.tar"
  umoci raw add-layer --image "$layout:$tag" --history.created "$created" \
    --history.created_by "kip test image: /kernel-id $i" "$work/id-$i.tar"
  umoci config --image "$layout:$tag" --no-history --created "$created" \
    --config.label "kip.test.kernel-id=$i"
  rm -rf "$d" "$work/data-$i.tar" "$work/id-$i" "$work/id-$i.tar"
done
log "built $count image(s) in $((SECONDS - t0))s; pushing to $registry (format $format)"

# --- push -----------------------------------------------------------------------------------------
push_one() {
  local i=$1
  "${SKOPEO_COPY[@]}" --format "$format" --dest-tls-verify=false "${DEST_CREDS[@]}" \
    --digestfile "$work/digest-$i" \
    "oci:$layout:image-$i" "docker://$registry/$prefix-$i:1" >"$work/push-$i.log" 2>&1
}

# wait_push INDEX: waits for push INDEX (the oldest one running) and reports it.
declare -A push_pid_of=()
wait_push() {
  local i=$1
  if ! wait "${push_pid_of[$i]}"; then
    cat "$work/push-$i.log" >&2
    die "push of $registry/$prefix-$i:1 failed"
  fi
  log "pushed $registry/$prefix-$i:1@$(cat "$work/digest-$i")"
}

next_wait=1
for ((i = 1; i <= count; i++)); do
  push_one "$i" &
  push_pid_of[$i]=$!
  push_pids+=("$!")
  if ((i - next_wait + 1 >= jobs)); then
    wait_push "$next_wait"
    next_wait=$((next_wait + 1))
  fi
done
for (( ; next_wait <= count; next_wait++)); do
  wait_push "$next_wait"
done
push_pids=()

for ((i = 1; i <= count; i++)); do
  echo "$registry/$prefix-$i:1"
done
log "done in $((SECONDS - t0))s"
