#!/usr/bin/env bash
# Wall time of `kip --once` against the runtime's own client pulling the same images with the same
# concurrency, cold on both sides, alternating, median of ROUNDS; plus kip's peak RSS.
#
#   bash bench/pull-bench.sh                 # 4 images of 64 MiB random data each, 3 rounds
#   IMAGES=4 DATA_MB=128 ROUNDS=5 bash bench/pull-bench.sh
#
# docker:      kip (docker backend)            vs  `docker pull` x N in parallel
# cri:         kip (CRI backend, containerd 1.6)      vs  `ctr -n k8s.io images pull` x N in parallel
# containerd:  kip (native containerd backend, 1.6)   vs  the same ctr pulls
# cri2, containerd2: the same two against containerd 2.x (its own ctr)
# containerd2-transfer: the containerd backend through containerd 2.x's Transfer service
#   (KIP_CONTAINERD_TRANSFER=on; containerd and containerd2 run with it off: the native path)
#   RUNTIMES="containerd cri containerd2 cri2" bash bench/pull-bench.sh
#   RUNTIMES="containerd2 containerd2-transfer cri2" bash bench/pull-bench.sh
# Components (registry, containerd 1.6 and 2.x, dockerd) are started in a temp dir and stopped at
# the end.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGES=${IMAGES:-4}
DATA_MB=${DATA_MB:-64}
ROUNDS=${ROUNDS:-3}
RUNTIMES=${RUNTIMES:-"docker cri containerd cri2 containerd2"}

bash tests/scripts/install-deps.sh >&2
cargo build --release -p kip >&2
KIP=$PWD/target/release/kip

DIR=$(mktemp -d /tmp/kip-bench.XXXXXX)
trap 'bash tests/scripts/env-down.sh "$DIR" >&2 || true' EXIT INT TERM
bash tests/scripts/env-up.sh "$DIR" >&2
# shellcheck disable=SC1091
source "$DIR/env"

mapfile -t REFS < <(bash tests/scripts/build-images.sh "$KIP_TEST_REGISTRY" bench/kernel "$IMAGES" "$DATA_MB")
LIST=$(IFS=,; echo "${REFS[*]}")
DOCKER=(docker -H "unix://$KIP_TEST_DOCKER_SOCK")
CTR=(ctr --address "$KIP_TEST_CONTAINERD_SOCK" -n k8s.io)
CTR2=("${KIP_TEST_CONTAINERD2_CTR:-ctr}" --address "${KIP_TEST_CONTAINERD2_SOCK:-}" -n k8s.io)

ctr_of() { # runtime -> name of the ctr array to use
  case $1 in cri2 | containerd2 | containerd2-transfer) echo CTR2 ;; *) echo CTR ;; esac
}

now() { date +%s.%N; }

make_cold() {
  case $1 in
    docker) "${DOCKER[@]}" rmi -f "${REFS[@]}" >/dev/null 2>&1 || true
            "${DOCKER[@]}" image prune -af >/dev/null 2>&1 || true ;;
    *)      local -n c=$(ctr_of "$1")
            # every image record (CRI also names images by config digest), then any leftover
            # content, so both sides download and unpack everything
            "${c[@]}" images ls -q 2>/dev/null | xargs -r "${c[@]}" images rm --sync >/dev/null 2>&1 || true
            "${c[@]}" content ls -q 2>/dev/null | xargs -r "${c[@]}" content rm >/dev/null 2>&1 || true
            if [[ -n $("${c[@]}" content ls -q 2>/dev/null) ]]; then echo "bench: content left after cold step" >&2; exit 1; fi ;;
  esac
}

# kip never skips for disk pressure here: a nearly full build disk must not end the run.
run_kip() { # runtime -> "seconds maxrss_kib"
  local sock=$KIP_TEST_CONTAINERD_SOCK kind transfer=off
  case $1 in
    docker) kind=docker sock=$KIP_TEST_DOCKER_SOCK ;;
    cri | containerd) kind=$1 ;;
    cri2) kind=cri sock=$KIP_TEST_CONTAINERD2_SOCK ;;
    containerd2) kind=containerd sock=$KIP_TEST_CONTAINERD2_SOCK ;;
    containerd2-transfer) kind=containerd sock=$KIP_TEST_CONTAINERD2_SOCK transfer=on ;;
    *) echo "bench: unknown runtime $1" >&2; exit 2 ;;
  esac
  local out; out=$(mktemp)
  /usr/bin/time -f "%e %M" -o "$out" env -i PATH="$PATH" KIP_CRI_ENDPOINT="unix://$sock" \
    KIP_CONTAINER_RUNTIME="$kind" KIP_CONTAINERD_TRANSFER="$transfer" \
    KIP_IMAGE_FETCHER=StaticListFetcher KIP_IMAGES="$LIST" \
    KIP_NUM_PULLERS="$IMAGES" KIP_PULL_POLICY=Always KIP_MAX_DISK_USAGE_PERCENT=100 \
    KIP_LOG_LEVEL=WARNING "$KIP" --once >&2
  cat "$out"; rm -f "$out"
}

run_ref() { # runtime -> seconds
  local t0; t0=$(now)
  local pids=()
  for r in "${REFS[@]}"; do
    case $1 in
      docker) "${DOCKER[@]}" pull -q "$r" >/dev/null & ;;
      *)      local -n c=$(ctr_of "$1")
              "${c[@]}" images pull --plain-http "$r" >/dev/null & ;;
    esac
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  echo "$(now) - $t0" | bc -l
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

echo "| runtime | kip --once (s, median) | reference (s, median) | ratio kip/ref | kip peak RSS (MiB, max) |"
echo "|---|---|---|---|---|"
declare -A KIP_MEDIAN=()
for rt in $RUNTIMES; do
  kip_t=(); ref_t=(); rss=()
  for ((i = 1; i <= ROUNDS; i++)); do
    # alternate which side goes first
    for side in $( ((i % 2)) && echo "kip ref" || echo "ref kip"); do
      make_cold "$rt"
      if [[ $side == kip ]]; then
        read -r secs kib < <(run_kip "$rt")
        kip_t+=("$secs"); rss+=("$kib")
      else
        ref_t+=("$(run_ref "$rt")")
      fi
    done
    echo "round $i $rt: kip ${kip_t[-1]}s ref ${ref_t[-1]}s rss ${rss[-1]}KiB" >&2
  done
  km=$(printf '%s\n' "${kip_t[@]}" | median)
  rm_=$(printf '%s\n' "${ref_t[@]}" | median)
  ratio=$(echo "$km / $rm_" | bc -l)
  maxrss=$(printf '%s\n' "${rss[@]}" | sort -g | tail -1)
  KIP_MEDIAN[$rt]=$km
  printf "| %s | %.2f | %.2f | %.2f | %.1f |\n" "$rt" "$km" "$rm_" "$ratio" "$(echo "$maxrss / 1024" | bc -l)"
done
for pair in "containerd cri" "containerd2 cri2" "containerd2-transfer cri2" "containerd2-transfer containerd2"; do
  read -r a b <<<"$pair"
  if [[ -n ${KIP_MEDIAN[$a]:-} && -n ${KIP_MEDIAN[$b]:-} ]]; then
    printf "%s/%s: %.2f\n" "$a" "$b" "$(echo "${KIP_MEDIAN[$a]} / ${KIP_MEDIAN[$b]}" | bc -l)"
  fi
done
echo
echo "$IMAGES images x (shared busybox layer + $DATA_MB MiB + small layer), $ROUNDS rounds, $(nproc) cores"
