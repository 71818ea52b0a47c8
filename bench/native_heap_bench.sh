#!/usr/bin/env bash
# Native heap profiling cost per allocator call (issue 17). Usage:
#   bench/native_heap_bench.sh [BUILD_DIR]   (run as root)
# Env knobs: ITERS (malloc loop iterations per run, default 200000), ROUNDS (default 3),
# POPULATE (Redis DEBUG POPULATE keys, default 100000), BENCH_NO_BCC=1, BENCH_NO_INSTALL=1,
# ONLY_CGO=1 (section 1b alone).
#
#  1. bench/targets/malloc_loop (one malloc of 16..4111 bytes and one free per iteration) under
#     each allocator Debian ships (glibc; jemalloc, tcmalloc, tcmalloc-minimal, mimalloc through
#     LD_PRELOAD), conditions in one run, per round:
#       base       no profiler
#       idle       the agent running with its defaults, no heap request (on_request: no probe)
#       sessions   the agent after a heap request (probes attached; uprobe sessions if the
#                  kernel has them)
#       pairs      the same with --malloc_uprobe_sessions=false (an uprobe and a uretprobe per
#                  allocation function: the path of kernels without sessions)
#       memleak    memleak-bpfcc -p PID -O LIB (bcc; every allocation with its stack), if it runs
#     Cost = the target's CPU time (user+sys: uprobe traps and BPF run in its context) minus the
#     same round's base, per allocator call (2 per iteration), median over rounds.
# 1b. bench/targets/cgo_malloc_loop: the same loop driven from Go, one cgo call per iteration,
#     the probes attached by a native_heap request (a Go program's C allocations); same
#     conditions and cost as 1, with glibc.
#  2. Debian's redis-server (jemalloc, no frame pointers): DEBUG POPULATE, Redis' own CPU time
#     (INFO cpu) for the same conditions, per allocator call (calls counted by the agent); then
#     the heap profile's `go tool pprof -top -cum` head (callers beyond the zmalloc wrappers).
# Target on the last CPU, tools on CPU 0.
set -uo pipefail

BUILD=$(cd "${1:-./build}" && pwd) || { echo "no build dir ${1:-./build}" >&2; exit 2; }
SRC=$(cd "$(dirname "$0")/.." && pwd)
ITERS=${ITERS:-200000}
ROUNDS=${ROUNDS:-3}
POPULATE=${POPULATE:-100000}
AGENT=$BUILD/pprof-sidecar
WORK=$(mktemp -d /tmp/pprof-sidecar-nativeheap.XXXXXX)
PORT=$((20000 + RANDOM % 20000))
NCPU=$(nproc)
LIBDIR=/usr/lib/x86_64-linux-gnu
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}

log() { printf '%s\n' "$*"; }
die() { echo "native_heap_bench: $*" >&2; exit 1; }
[[ $EUID -eq 0 ]] || die "must run as root"
[[ -x $AGENT ]] || die "$AGENT missing: build first"

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
if ((NCPU >= 2)); then
  PIN_TARGET=(taskset -c $((NCPU - 1))); PIN_TOOLS=(taskset -c 0)
else
  PIN_TARGET=(); PIN_TOOLS=()
fi
median() { sort -g | awk '{a[NR]=$1} END{if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

log "== machine"
log "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') x $NCPU"
log "kernel: $(uname -r); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
source "$SRC/bench/bcc_setup.sh"
bcc_setup memleak-bpfcc

# Starts the tool of condition $1 against pid $2 (allocator library $3, "" for libc); sets TOOL.
TOOL=
start_tool() {
  local cond=$1 pid=$2 lib=$3 flags=()
  TOOL=
  case $cond in
    base) return 0 ;;
    memleak)
      "${PIN_TOOLS[@]}" memleak-bpfcc -p "$pid" ${lib:+-O "$lib"} 3600 >"$WORK/memleak.log" 2>&1 &
      TOOL=$!
      for _ in $(seq 900); do grep -q 'Attaching' "$WORK/memleak.log" && break; sleep 0.2; done
      # memleak hooks mmap/munmap in the object too and dies when it has none (jemalloc,
      # mimalloc): then there is no row, not a free one.
      sleep 1
      if ! kill -0 "$TOOL" 2>/dev/null || grep -q '^Exception' "$WORK/memleak.log"; then
        grep -m1 '^Exception' "$WORK/memleak.log" >"$WORK/memleak.failed"
        return 1
      fi
      return 0 ;;
    pairs) flags=(--malloc_uprobe_sessions=false) ;;
  esac
  "${PIN_TOOLS[@]}" "$AGENT" --target_pid="$pid" --listen_address=127.0.0.1:$PORT \
    --cpu_sampling_clock=perf "${flags[@]}" >"$WORK/agent.log" 2>&1 &
  TOOL=$!
  for _ in $(seq 100); do curl -sf "127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
  [[ $cond == idle ]] && return 0
  curl -sf -o /dev/null "127.0.0.1:$PORT/debug/pprof/${ATTACH_KIND:-heap}" || return 1
}
stop_tool() { [[ -n $TOOL ]] && kill "$TOOL" 2>/dev/null && wait "$TOOL" 2>/dev/null; TOOL=; }
metric() { curl -sf "127.0.0.1:$PORT/metrics" | awk -v m="$1" '$1==m {print $2}'; }

CONDS=(base idle sessions pairs)
((BCC_OK)) && CONDS+=(memleak)

LOOP_BIN=$WORK/malloc_loop
run_loop() {  # $1 = preload ("" for glibc), $2 = condition; prints cpu ns of the loop
  local pre=$1 cond=$2 ready res
  coproc ML { LD_PRELOAD=$pre exec "${PIN_TARGET[@]}" "$LOOP_BIN"; }
  read -r -t 10 -u "${ML[0]}" ready || return 1
  local pid=${ready#ready }
  if ! start_tool "$cond" "$pid" "$pre"; then
    stop_tool; echo quit >&"${ML[1]}"; wait "$ML_PID" 2>/dev/null; return 1
  fi
  echo "run $ITERS" >&"${ML[1]}"
  read -r -u "${ML[0]}" res
  stop_tool
  echo quit >&"${ML[1]}"; wait "$ML_PID" 2>/dev/null
  awk '{print $3}' <<<"$res"
}
# One row of added ns per call for allocator library $1 ("" for glibc), labelled $2.
loop_row() {
  local lib=$1 label=$2 pre=${1:+$LIBDIR/$1} base m r c
  declare -A cpu=()
  for r in $(seq "$ROUNDS"); do
    for c in "${CONDS[@]}"; do cpu[$c]+="$(run_loop "$pre" "$c") "; done
  done
  base=$(tr ' ' '\n' <<<"${cpu[base]}" | grep . | median)
  printf '%-28s%12s' "$label" "$(awk -v b="$base" -v n="$ITERS" 'BEGIN{printf "%.0f", b/n/2}')"
  for c in "${CONDS[@]:1}"; do
    m=$(tr ' ' '\n' <<<"${cpu[$c]}" | grep . | median)
    if [[ $m == nan ]]; then printf '%12s' "n/a"; continue; fi
    printf '%12s' "$(awk -v m="$m" -v b="$base" -v n="$ITERS" 'BEGIN{printf "%+.0f", (m-b)/n/2}')"
  done
  printf '\n'
}

# 1b: the loop driven from Go through cgo, probes attached by a native_heap request.
cgo_loop_section() {
  log ""
  log "== 1b. cgo malloc loop (Go -> C, one malloc + one free per cgo call), probes attached by"
  log "   native_heap: added CPU ns per allocator call, median of $ROUNDS rounds"
  local go=${CGO_GO:-/opt/pprof-sidecar/go/1.27/bin/go}
  (cd "$SRC/bench/targets/cgo_malloc_loop" && GO111MODULE=off GOFLAGS= GOTOOLCHAIN=local \
    "$go" build -o "$WORK/cgo_malloc_loop" .) || { log "go build cgo_malloc_loop failed"; return; }
  local LOOP_BIN=$WORK/cgo_malloc_loop ATTACH_KIND=native_heap
  printf '%-28s' "allocator"; for c in "${CONDS[@]}"; do printf '%12s' "$c"; done; printf '\n'
  loop_row "" "glibc, cgo ($("$go" env GOVERSION))"
  log "(base column: the loop's own CPU ns per call, the cgo call included; others: added ns)"
}
if [[ ${ONLY_CGO:-0} == 1 ]]; then cgo_loop_section; exit 0; fi

log ""
log "== 1. malloc loop: added CPU ns per allocator call (malloc or free), median of $ROUNDS rounds"
gcc -O2 -g "$SRC/bench/targets/malloc_loop/malloc_loop.c" -o "$WORK/malloc_loop" || die "gcc"
printf '%-28s' "allocator"; for c in "${CONDS[@]}"; do printf '%12s' "$c"; done; printf '\n'
for lib in "" libjemalloc.so.2 libtcmalloc.so.4 libtcmalloc_minimal.so.4 libmimalloc.so.2; do
  pre=${lib:+$LIBDIR/$lib}
  [[ -n $pre && ! -r $pre ]] && { log "${lib}: not installed, row skipped"; continue; }
  loop_row "$lib" "${lib:-glibc (libc.so.6)}"
done
log "(base column: the loop's own CPU ns per call; others: added ns per call; n/a: the tool failed)"
[[ -s $WORK/memleak.failed ]] && log "memleak failed on some allocators: $(cat "$WORK/memleak.failed")"
cgo_loop_section

log ""
log "== 2. redis-server DEBUG POPULATE $POPULATE: Redis CPU ms, added us per allocator call"
command -v redis-server >/dev/null || { log "redis-server not installed: section skipped"; exit 0; }
RPORT=$((PORT + 1))
declare -A CPU=() WALL=()
CALLS=
redis_cpu() { redis-cli -p "$RPORT" INFO cpu | awk -F: '/^used_cpu_(sys|user):/{s+=$2} END{printf "%.0f", s*1000}'; }
JEMALLOC=$(ldd "$(command -v redis-server)" | awk '/jemalloc/{print $3}')
for c in "${CONDS[@]}"; do
  "${PIN_TARGET[@]}" redis-server --port "$RPORT" --save '' --appendonly no \
    --enable-debug-command yes >"$WORK/redis.log" 2>&1 &
  RP=$!; PIDS+=("$RP")
  for _ in $(seq 50); do redis-cli -p "$RPORT" PING >/dev/null 2>&1 && break; sleep 0.1; done
  if ! start_tool "$c" "$RP" "$JEMALLOC"; then
    log "$c: did not attach to $JEMALLOC: $(cat "$WORK/memleak.failed" 2>/dev/null)"
    stop_tool; kill "$RP"; wait "$RP" 2>/dev/null; continue
  fi
  c0=$(redis_cpu); t0=$(date +%s%N)
  redis-cli -p "$RPORT" DEBUG POPULATE "$POPULATE" key 100 >/dev/null
  t1=$(date +%s%N); c1=$(redis_cpu)
  calls=
  if [[ $c == sessions || $c == pairs ]]; then
    calls=$(($(metric pprof_sidecar_malloc_calls_total) + $(metric pprof_sidecar_malloc_frees_total)))
    [[ $c == sessions ]] && curl -sf -o "$WORK/redis_heap.pb.gz" "127.0.0.1:$PORT/debug/pprof/heap"
  fi
  stop_tool
  kill "$RP"; wait "$RP" 2>/dev/null
  CPU[$c]=$((c1 - c0)); WALL[$c]=$(((t1 - t0) / 1000000)); [[ -n $calls ]] && CALLS=$calls
  log "$(printf '%-10s redis cpu %6d ms, wall %6d ms' "$c" "${CPU[$c]}" "${WALL[$c]}")${calls:+, allocator calls $calls}"
done
for c in "${CONDS[@]:1}"; do
  [[ -z ${CPU[$c]:-} ]] && continue
  log "$(printf '%-10s added %.2f us per allocator call, %.1fx the base CPU' "$c" \
    "$(awk -v m="${CPU[$c]}" -v b="${CPU[base]}" -v n="${CALLS:-1}" 'BEGIN{print (m-b)*1000/n}')" \
    "$(awk -v m="${CPU[$c]}" -v b="${CPU[base]}" 'BEGIN{print m/b}')")"
done
if [[ -s $WORK/redis_heap.pb.gz ]]; then
  log ""
  log "heap profile of the populate (inuse_space, go tool pprof -top -cum):"
  "$GO" tool pprof -top -cum -sample_index=inuse_space "$WORK/redis_heap.pb.gz" 2>/dev/null |
    grep -v '^pprof-sidecar' | sed -n '1,24p'
fi
