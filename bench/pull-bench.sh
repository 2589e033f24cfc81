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
#
# After each cold step the script waits SETTLE seconds (default 6) with the disk synced: ext4
# skips inodes freed in the last 5 s when it allocates new ones, so an unpack that starts right
# after the previous images were deleted spends extra kernel CPU on creating files, by an amount
# that depends on which side ran first.
#
# Besides wall time, each side's CPU time is reported: the pulling client's (kip, or the `ctr` /
# `docker` processes), the daemon's (containerd, or dockerd and its containerd) and the
# registry's, measured around the pull. On a machine whose cores are all busy during a pull, a
# path cannot take less wall time than its CPU time divided by the cores.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGES=${IMAGES:-4}
DATA_MB=${DATA_MB:-64}
ROUNDS=${ROUNDS:-3}
SETTLE=${SETTLE:-6}
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

ticks() { # pid -> CPU ticks (user + system) of the process and its descendants
  local t=0 c
  [[ -r /proc/$1/stat ]] || { echo 0; return; }
  t=$(awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0)
  for c in $(pgrep -P "$1" 2>/dev/null); do t=$((t + $(ticks "$c"))); done
  echo "$t"
}
HZ=$(getconf CLK_TCK)
server_pids() { # runtime -> pids of the daemon(s) and the registry serving it
  local p=("$DIR/registry.pid")
  case $1 in
    docker) p+=("$DIR/dockerd.pid" "$DIR/docker-containerd.pid") ;;
    cri2 | containerd2 | containerd2-transfer) p+=("$DIR/containerd2.pid") ;;
    *) p+=("$DIR/containerd.pid") ;;
  esac
  cat "${p[@]}"
}
server_ticks() { # runtime -> CPU ticks of its daemon(s) and the registry so far
  local t=0 pid
  for pid in $(server_pids "$1"); do t=$((t + $(ticks "$pid"))); done
  echo "$t"
}

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
  sync
  sleep "$SETTLE"
}

# kip never skips for disk pressure here: a nearly full build disk must not end the run.
run_kip() { # runtime -> "seconds maxrss_kib cpu_seconds"
  local sock=$KIP_TEST_CONTAINERD_SOCK kind transfer=off
  case $1 in
    docker) kind=docker sock=$KIP_TEST_DOCKER_SOCK ;;
    cri | containerd) kind=$1 ;;
    cri2) kind=cri sock=$KIP_TEST_CONTAINERD2_SOCK ;;
    containerd2) kind=containerd sock=$KIP_TEST_CONTAINERD2_SOCK ;;
    containerd2-transfer) kind=containerd sock=$KIP_TEST_CONTAINERD2_SOCK transfer=on ;;
    *) echo "bench: unknown runtime $1" >&2; exit 2 ;;
  esac
  local out t0; out=$(mktemp)
  t0=$(server_ticks "$1")
  /usr/bin/time -f "%e %M %U %S" -o "$out" env -i PATH="$PATH" KIP_CRI_ENDPOINT="unix://$sock" \
    KIP_CONTAINER_RUNTIME="$kind" KIP_CONTAINERD_TRANSFER="$transfer" \
    KIP_IMAGE_FETCHER=StaticListFetcher KIP_IMAGES="$LIST" \
    KIP_NUM_PULLERS="$IMAGES" KIP_PULL_POLICY=Always KIP_MAX_DISK_USAGE_PERCENT=100 \
    KIP_LOG_LEVEL=WARNING "$KIP" --once >&2
  local secs kib user sys
  read -r secs kib user sys <"$out"; rm -f "$out"
  echo "$secs $kib $(echo "$user + $sys + ($(server_ticks "$1") - $t0) / $HZ" | bc -l)"
}

run_ref() { # runtime -> "seconds cpu_seconds"
  local t0 c0 tmp i=0; tmp=$(mktemp -d)
  c0=$(server_ticks "$1")
  t0=$(now)
  local pids=()
  for r in "${REFS[@]}"; do
    i=$((i + 1))
    case $1 in
      docker) /usr/bin/time -f "%U %S" -o "$tmp/$i" "${DOCKER[@]}" pull -q "$r" >/dev/null & ;;
      *)      local -n c=$(ctr_of "$1")
              /usr/bin/time -f "%U %S" -o "$tmp/$i" "${c[@]}" images pull --plain-http "$r" >/dev/null & ;;
    esac
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  local secs; secs=$(echo "$(now) - $t0" | bc -l)
  local clients; clients=$(cat "$tmp"/* | awk '{s += $1 + $2} END {print s + 0}'); rm -rf "$tmp"
  echo "$secs $(echo "$clients + ($(server_ticks "$1") - $c0) / $HZ" | bc -l)"
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

echo "| runtime | kip --once (s, median) | reference (s, median) | ratio kip/ref | kip peak RSS (MiB, max) | CPU s kip side (median) | CPU s ref side (median) |"
echo "|---|---|---|---|---|---|---|"
declare -A KIP_MEDIAN=()
for rt in $RUNTIMES; do
  kip_t=(); ref_t=(); rss=(); kip_c=(); ref_c=()
  for ((i = 1; i <= ROUNDS; i++)); do
    # alternate which side goes first
    for side in $( ((i % 2)) && echo "kip ref" || echo "ref kip"); do
      make_cold "$rt"
      if [[ $side == kip ]]; then
        read -r secs kib cpu < <(run_kip "$rt")
        kip_t+=("$secs"); rss+=("$kib"); kip_c+=("$cpu")
      else
        read -r secs cpu < <(run_ref "$rt")
        ref_t+=("$secs"); ref_c+=("$cpu")
      fi
    done
    printf "round %s %s: kip %ss ref %.2fs rss %sKiB cpu kip side %.2fs ref side %.2fs\n" "$i" "$rt" \
      "${kip_t[-1]}" "${ref_t[-1]}" "${rss[-1]}" "${kip_c[-1]}" "${ref_c[-1]}" >&2
  done
  km=$(printf '%s\n' "${kip_t[@]}" | median)
  rm_=$(printf '%s\n' "${ref_t[@]}" | median)
  ratio=$(echo "$km / $rm_" | bc -l)
  maxrss=$(printf '%s\n' "${rss[@]}" | sort -g | tail -1)
  KIP_MEDIAN[$rt]=$km
  kc=$(printf '%s\n' "${kip_c[@]}" | median)
  rc=$(printf '%s\n' "${ref_c[@]}" | median)
  printf "| %s | %.2f | %.2f | %.2f | %.1f | %.2f | %.2f |\n" "$rt" "$km" "$rm_" "$ratio" \
    "$(echo "$maxrss / 1024" | bc -l)" "$kc" "$rc"
done
for pair in "containerd cri" "containerd2 cri2" "containerd2-transfer cri2" "containerd2-transfer containerd2"; do
  read -r a b <<<"$pair"
  if [[ -n ${KIP_MEDIAN[$a]:-} && -n ${KIP_MEDIAN[$b]:-} ]]; then
    printf "%s/%s: %.2f\n" "$a" "$b" "$(echo "${KIP_MEDIAN[$a]} / ${KIP_MEDIAN[$b]}" | bc -l)"
  fi
done
echo
echo "$IMAGES images x (shared busybox layer + $DATA_MB MiB + small layer), $ROUNDS rounds, $(nproc) cores, ${SETTLE}s settle after each cold step"
