#!/usr/bin/env bash
# pprof-sidecar benchmark. Usage: bench/run.sh [BUILD_DIR]   (default ./build; run as root)
#
# Env knobs: ROUNDS (default 7), TARGET_CPU_S (CPU seconds of fixed work per run, default 2),
# BIG_GO_BINARY (symbolization subject, default Go 1.23's compiler), BENCH_NO_INSTALL=1 (do not
# apt-get install bpfcc-tools/kernel headers for the profile-bpfcc row), BENCH_NO_BCC=1.
#
# What it does (results are printed; BENCHMARKS.md explains them):
#  1. Slowdown: one long-lived Go target (bench/targets/spin) does the same fixed, deterministic
#     work on command and times itself (wall and process CPU). Conditions, interleaved in every
#     round (the order rotates each round so no condition always follows another):
#       base     no profiler
#       gopprof  Go's own runtime/pprof CPU profiler (StartCPUProfile, 100 Hz)
#       agent    pprof-sidecar sampling it at 100 Hz with its defaults: samples taken at the
#                scheduler tick, unwinding on (stack copies unwound by CFI/pclntab); one
#                /debug/pprof/profile request whose window covers the whole run
#       agentperf  the same with --cpu_sampling_clock=perf (a cpu-clock perf event per CPU)
#       agentfp  the default with --user_stack_bytes=0 (frame pointers only, unwinding off)
#       bcc      profile-bpfcc -F 100 -p PID (if it can run here)
#     The target is pinned to the last CPU, agent and bcc to CPU 0, so the target's slowdown is
#     the in-target cost (perf interrupt + BPF program + cache effects) and the agent's own CPU is
#     reported separately. Per round, each condition is divided by that round's base run; the
#     median and min..max of those ratios are reported.
#  1b. Stolen time: the same conditions while the target reads the clock in a tight loop for
#     STOLEN_MS (default 2000) and sums the gaps longer than 500 ns (STOLEN_ROUNDS, default ROUNDS):
#     the time each profiler takes from the target directly, at a far finer resolution than
#     timing fixed work.
#  1c. Gap attribution (GAP_ROUNDS, default 6): the same loop logging every gap while
#     sampler_bench runs the tick and perf clocks (with and without stack copies) in rotating 2 s
#     slices and logs every sample's time; bench/gap_attrib.py prices each sample as the length
#     of the gap holding it minus an unsampled tick gap of the same seconds.
#  2. Agent cost while profiling: BPF ns per sample (kernel.bpf_stats_enabled; run_time_ns and
#     run_cnt of the agent's sampling programs, read from /proc/AGENT/fdinfo, the same counters
#     bpftool prog show prints), agent VmRSS/VmHWM, agent CPU (utime+stime / wall of the window).
#  3. Serving latency: curl total time - requested seconds, for every agent round, and for the
#     first request of freshly started agents (FIRST_REPS, default 3).
#  4. BPF A/B (bench/sampler_bench): the sampler's per-sample cost under the old configuration
#     (8 KiB copy, kernel frame-pointer walker, 8 MiB ring, wakeup per record), the default one
#     and single-knob variants, interleaved, on the pinned spin target while it works.
#  5. Memory: agent VmRSS after each of RSS_WINDOWS (default 3) consecutive RSS_WINDOW_S (30)
#     second windows on bench/targets/burn with 2 busy goroutines (both CPUs, unpinned), and the
#     agent's CPU over them.
#  6. Cold symbolization of a large Go binary: bench/symbolize_bench (page cache warm, and
#     evicted).
set -uo pipefail

BUILD=$(cd "${1:-./build}" && pwd) || { echo "no build dir ${1:-./build}" >&2; exit 2; }
SRC=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-7}
TARGET_CPU_S=${TARGET_CPU_S:-2}
BIG_GO_BINARY=${BIG_GO_BINARY:-/usr/lib/go-1.23/pkg/tool/linux_amd64/compile}
AGENT=$BUILD/pprof-sidecar
SYMBENCH=$BUILD/symbolize_bench
SAMPLERBENCH=$BUILD/sampler_bench
FIRST_REPS=${FIRST_REPS:-3}
RSS_WINDOWS=${RSS_WINDOWS:-3}
RSS_WINDOW_S=${RSS_WINDOW_S:-30}
WORK=$(mktemp -d /tmp/pprof-sidecar-bench.XXXXXX)
PORT=$((20000 + RANDOM % 20000))
CLK_TCK=$(getconf CLK_TCK)
NCPU=$(nproc)
T_START=$(date +%s)

log() { printf '%s\n' "$*"; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
die() { echo "bench: $*" >&2; exit 1; }

[[ $EUID -eq 0 ]] || die "must run as root (BPF, bpf_stats_enabled)"
[[ -x $AGENT ]] || die "$AGENT missing: build first"
for t in symbolize_bench sampler_bench; do
  [[ -x $BUILD/$t ]] || cmake --build "$BUILD" --target "$t" >/dev/null 2>&1 || true
done

AGENT_PID= AGENTFP_PID= AGENTPERF_PID= TGT_PID= BCC_PID= EXTRA_PIDS= OLD_BPF_STATS=$(sysctl -n kernel.bpf_stats_enabled 2>/dev/null || echo 0)
cleanup() {
  [[ -n $BCC_PID ]] && kill -TERM "$BCC_PID" 2>/dev/null
  [[ -n $AGENT_PID ]] && kill "$AGENT_PID" 2>/dev/null
  [[ -n $AGENTFP_PID ]] && kill "$AGENTFP_PID" 2>/dev/null
  [[ -n $AGENTPERF_PID ]] && kill "$AGENTPERF_PID" 2>/dev/null
  for p in $EXTRA_PIDS; do kill "$p" 2>/dev/null; done
  if [[ -n $TGT_PID ]]; then
    [[ -n ${SPIN[1]:-} ]] && echo quit >&"${SPIN[1]}" 2>/dev/null
    sleep 0.2
    kill "$TGT_PID" 2>/dev/null
  fi
  sysctl -qw kernel.bpf_stats_enabled="$OLD_BPF_STATS" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

if ((NCPU >= 2)); then
  TARGET_CPU=$((NCPU - 1)); PIN_TARGET=(taskset -c "$TARGET_CPU"); PIN_TOOLS=(taskset -c 0)
else
  PIN_TARGET=(); PIN_TOOLS=()
fi

log "== machine"
log "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') x $NCPU"
log "kernel: $(uname -r); mem: $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
log "go: $(go version 2>/dev/null)"
log "load average at start: $(loadavg)"

# ---------------------------------------------------------------- optional profile-bpfcc
source "$(dirname "${BASH_SOURCE[0]}")/bcc_setup.sh"
bcc_setup profile-bpfcc

# ---------------------------------------------------------------- target
log ""
log "== building the Go target (bench/targets/spin) with $(go version | awk '{print $3}')"
(cd "$SRC/bench/targets/spin" && GO111MODULE=off GOFLAGS= go build -o "$WORK/bench-spin" .) ||
  die "go build of bench/targets/spin failed"
(cd "$SRC/bench/targets/burn" && GO111MODULE=off GOFLAGS= go build -o "$WORK/bench-burn" .) ||
  die "go build of bench/targets/burn failed"
coproc SPIN { exec "${PIN_TARGET[@]}" "$WORK/bench-spin" -gopprof_out="$WORK/gopprof.pb.gz"; }
read -r -t 10 -u "${SPIN[0]}" ready || die "target did not start"
TGT_PID=$(awk '{print $2}' <<<"$ready")
# run MODE ITERS -> echoes "wall_ns cpu_ns"
spin_run() {
  echo "run $1 $2" >&"${SPIN[1]}"
  local line
  read -r -u "${SPIN[0]}" line || die "target died"
  [[ $line == RESULT* ]] || die "target: $line"
  awk '{print $3, $4}' <<<"$line"
}

# ---------------------------------------------------------------- agent
"${PIN_TOOLS[@]}" "$AGENT" --target_pid="$TGT_PID" --listen_address=127.0.0.1:$PORT \
  2>"$WORK/agent.log" &
AGENT_PID=$!
PORTFP=$((PORT + 1))
"${PIN_TOOLS[@]}" "$AGENT" --target_pid="$TGT_PID" --listen_address=127.0.0.1:$PORTFP \
  --user_stack_bytes=0 2>"$WORK/agentfp.log" &
AGENTFP_PID=$!
PORTPERF=$((PORT + 5))
"${PIN_TOOLS[@]}" "$AGENT" --target_pid="$TGT_PID" --listen_address=127.0.0.1:$PORTPERF \
  --cpu_sampling_clock=perf 2>"$WORK/agentperf.log" &
AGENTPERF_PID=$!
for p in $PORT $PORTFP $PORTPERF; do
  for _ in $(seq 50); do curl -sf "127.0.0.1:$p/healthz" >/dev/null && break; sleep 0.1; done
  curl -sf "127.0.0.1:$p/healthz" >/dev/null || { cat "$WORK"/agent*.log; die "agent did not start"; }
done
log "agent pid $AGENT_PID on :$PORT (defaults), $AGENTPERF_PID on :$PORTPERF (perf clock)," \
  "$AGENTFP_PID on :$PORTFP (frame pointers only), target pid $TGT_PID" \
  "(pinned: ${PIN_TARGET[*]:-no})"
sysctl -qw kernel.bpf_stats_enabled=1 || log "warning: cannot enable kernel.bpf_stats_enabled"

# run_time_ns, run_cnt and count of the newest perf_event (type 7) BPF program PID holds open
# (the sampler's; a restarted sampler loads a new program with a higher id).
# prog_stats PID -> "run_time_ns run_cnt found": summed over the process's CPU sampling programs
# (tracepoint and perf_event programs: the agent's tick and cpu-clock ones, bcc's)
prog_stats() {
  local f
  for f in /proc/"$1"/fdinfo/*; do
    grep -qE '^prog_type:[[:space:]]*(5|7)$' "$f" 2>/dev/null || continue
    awk '/^prog_id:/{i=$2} /^run_time_ns:/{t=$2} /^run_cnt:/{c=$2} END{print i+0, t+0, c+0}' "$f"
  done | sort -un -k1,1 | awk '{t += $2; c += $3; n++} END{print t+0, c+0, (n > 0)}'
}
proc_cpu_ticks() { awk '{print $14 + $15}' /proc/"$1"/stat; }
metric() { curl -s "127.0.0.1:${2:-$PORT}/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
now_ns() { date +%s%N; }

# ---------------------------------------------------------------- calibration
log ""
log "== calibration (load average $(loadavg))"
read -r w c < <(spin_run base 200000)
ITERS=$(python3 -c "print(max(10000, int(200000 * $TARGET_CPU_S * 1e9 / $c)))")
read -r w c < <(spin_run base "$ITERS")  # warm-up at full size
WINDOW=$(python3 -c "import math; print(int(math.ceil(2 * $w / 1e9)) + 2)")
log "iterations per run: $ITERS (warm-up: wall $(python3 -c "print(f'{$w/1e9:.2f}')") s," \
  "cpu $(python3 -c "print(f'{$c/1e9:.2f}')") s); agent window: ${WINDOW} s"

# Cost of an invocation that is filtered out (the target is idle: every sample is another task's).
IDLE_NS=0
curl -s -o /dev/null "127.0.0.1:$PORT/debug/pprof/profile?seconds=6" &
idle_curl=$!
for _ in $(seq 100); do read -r _ _ n < <(prog_stats "$AGENT_PID"); ((n > 0)) && break; sleep 0.05; done
sleep 0.2
read -r b0 n0 _ < <(prog_stats "$AGENT_PID"); sleep 2; read -r b1 n1 _ < <(prog_stats "$AGENT_PID")
wait "$idle_curl"
((n1 > n0)) && IDLE_NS=$(((b1 - b0) / (n1 - n0)))
log "BPF ns per filtered-out invocation (target idle, $((n1 - n0)) invocations): $IDLE_NS"

# ---------------------------------------------------------------- conditions
RESULTS=$WORK/results.tsv  # round cond wall_ns cpu_ns extra...
AGENTX=$WORK/agent.tsv     # round bpf_ns bpf_cnt samples latency_s agent_cpu_frac rss_kb hwm_kb cond
: >"$RESULTS"; : >"$AGENTX"

# measure MODE -> "wall_ns value": one run of the condition's work. MEASURE=time: the fixed work
# (value: the target's CPU ns); MEASURE=stolen: STOLEN_MS of reading the clock (value: the ns
# taken from the target in gaps, see bench/targets/spin).
MEASURE=time
measure() {
  if [[ $MEASURE == stolen ]]; then
    echo "stolen $1 $STOLEN_MS" >&"${SPIN[1]}"
    local line
    read -r -u "${SPIN[0]}" line || die "target died"
    [[ $line == RESULT* ]] || die "target: $line"
    awk '{print $3, $4, $6, $5, $7}' <<<"$line"  # wall stolen short_stolen gaps short_gaps
  else
    spin_run "$1" "$ITERS"
  fi
}

cond_base() { echo "$1 base $(measure base)" >>"$RESULTS"; }
cond_gopprof() { echo "$1 gopprof $(measure gopprof)" >>"$RESULTS"; }

# agent_round ROUND COND PORT PID
agent_round() {
  local r=$1 cond=$2 port=$3 apid=$4 s0 s1 b0 b1 c0 c1 t0 t1 res lat
  s0=$(metric pprof_sidecar_samples_total "$port")
  c0=$(proc_cpu_ticks "$apid"); t0=$(now_ns)
  curl -s -o "$WORK/agent.pb.gz" -w '%{http_code} %{time_total}\n' \
    "127.0.0.1:$port/debug/pprof/profile?seconds=$WINDOW" >"$WORK/curl.out" &
  local curl_pid=$!
  # Wait until the sampler's BPF program is loaded (the window starts right after).
  for _ in $(seq 100); do
    read -r _ _ n < <(prog_stats "$apid"); ((n > 0)) && break; sleep 0.05
  done
  sleep 0.2
  read -r b0 n0 _ < <(prog_stats "$apid")
  res=$(measure base)
  read -r b1 n1 _ < <(prog_stats "$apid")
  wait "$curl_pid"
  t1=$(now_ns); c1=$(proc_cpu_ticks "$apid")
  s1=$(metric pprof_sidecar_samples_total "$port")
  read -r code total <"$WORK/curl.out"
  [[ $code == 200 ]] || log "  round $r: profile request answered $code"
  local rss hwm
  rss=$(awk '/VmRSS/{print $2}' /proc/"$apid"/status)
  hwm=$(awk '/VmHWM/{print $2}' /proc/"$apid"/status)
  lat=$(python3 -c "print(f'{$total - $WINDOW:.4f}')")
  echo "$r $cond $res" >>"$RESULTS"
  echo "$r $((b1 - b0)) $((n1 - n0)) $((s1 - s0)) $lat" \
    "$(python3 -c "print(f'{($c1 - $c0) / $CLK_TCK / (($t1 - $t0) / 1e9):.5f}')") $rss $hwm $cond" \
    >>"$AGENTX"
}

cond_agent() { agent_round "$1" agent "$PORT" "$AGENT_PID"; }
cond_agentfp() { agent_round "$1" agentfp "$PORTFP" "$AGENTFP_PID"; }
cond_agentperf() { agent_round "$1" agentperf "$PORTPERF" "$AGENTPERF_PID"; }

cond_bcc() {
  local r=$1
  ((BCC_OK)) || return 0
  PYTHONUNBUFFERED=1 "${PIN_TOOLS[@]}" profile-bpfcc -F 100 -p "$TGT_PID" 3600 \
    >"$WORK/bcc.out" 2>"$WORK/bcc.err" &
  BCC_PID=$!
  local ok=0
  for _ in $(seq 1200); do  # bcc compiles its program first: up to 120 s
    grep -q '^Sampling' "$WORK/bcc.out" 2>/dev/null && { ok=1; break; }
    kill -0 "$BCC_PID" 2>/dev/null || break
    sleep 0.1
  done
  if ((!ok)); then
    log "  bcc: profile-bpfcc did not start (tail of its stderr below): row skipped"
    tail -3 "$WORK/bcc.err" | sed 's/^/    /'
    kill -TERM "$BCC_PID" 2>/dev/null; wait "$BCC_PID" 2>/dev/null; BCC_PID=; BCC_OK=0
    return 0
  fi
  read -r b0 n0 _ < <(prog_stats "$BCC_PID")
  local res; res=$(measure base)
  read -r b1 n1 _ < <(prog_stats "$BCC_PID")
  kill -TERM "$BCC_PID" 2>/dev/null; wait "$BCC_PID" 2>/dev/null; BCC_PID=
  echo "$r bcc $res $((b1 - b0)) $((n1 - n0))" >>"$RESULTS"
}

CONDS=(base gopprof agent agentperf agentfp bcc)
log ""
log "== slowdown: $ROUNDS rounds of ${CONDS[*]} (rotating order)"
for ((r = 1; r <= ROUNDS; r++)); do
  order=()
  for ((k = 0; k < ${#CONDS[@]}; k++)); do order+=("${CONDS[$(((k + r - 1) % ${#CONDS[@]}))]}"); done
  for cnd in "${order[@]}"; do "cond_$cnd" "$r"; done
  log "round $r/$ROUNDS done (order ${order[*]}; load average $(loadavg))"
done

# ---------------------------------------------------------------- stolen time
# The same conditions, but the target reads the clock in a tight loop and sums the gaps: the time
# each profiler takes from it directly (interrupt + BPF program, or Go's SIGPROF handler), free
# of the run-to-run spread of timing fixed work (~2 %, too coarse for a 0.2 % goal).
STOLEN_MS=${STOLEN_MS:-2000}
STOLEN_ROUNDS=${STOLEN_ROUNDS:-$ROUNDS}
STOLENF=$WORK/stolen.tsv
: >"$STOLENF"
log ""
log "== stolen time: $STOLEN_ROUNDS rounds of ${CONDS[*]}, ${STOLEN_MS} ms each (rotating order)"
SAVED=("$RESULTS" "$AGENTX" "$WINDOW")
RESULTS=$STOLENF AGENTX=$WORK/agent_stolen.tsv WINDOW=$((STOLEN_MS / 1000 + 2)) MEASURE=stolen
for ((r = 1; r <= STOLEN_ROUNDS; r++)); do
  order=()
  for ((k = 0; k < ${#CONDS[@]}; k++)); do order+=("${CONDS[$(((k + r - 1) % ${#CONDS[@]}))]}"); done
  for cnd in "${order[@]}"; do "cond_$cnd" "$r"; done
  log "round $r/$STOLEN_ROUNDS done (load average $(loadavg))"
done
RESULTS=${SAVED[0]} AGENTX=${SAVED[1]} WINDOW=${SAVED[2]} MEASURE=time

# ---------------------------------------------------------------- gap attribution
# Per-sample stolen time, sample by sample: the target logs every gap of its clock loop, the
# sampler (sampler_bench, same program and options as the agent) logs every sample's time, and
# bench/gap_attrib.py compares gaps that hold a sample with the tick gaps of the same seconds that
# hold none, so the VM's drifting background cancels.
GAPF=$WORK/gaps.txt TIMESF=$WORK/times.txt GAPOUT=$WORK/gapattr.txt
: >"$GAPOUT"
if [[ -x $SAMPLERBENCH ]]; then
  GAP_ROUNDS=${GAP_ROUNDS:-6}
  GAP_VARIANTS=(tick:8192:both:1:::::tick perf:8192:both:1:::::perf
    fptick:0:none:1:::::tick fpperf:0:none:1:::::perf)
  gap_ms=$(((${#GAP_VARIANTS[@]} + 1) * GAP_ROUNDS * 2600 + 8000))  # slices + program loads
  log ""
  log "== gap attribution: $GAP_ROUNDS rounds of ${GAP_VARIANTS[*]} (load average $(loadavg))"
  rm -f "$TIMESF"
  echo "gaplog $gap_ms $GAPF" >&"${SPIN[1]}"
  sleep 0.5
  "${PIN_TOOLS[@]}" "$SAMPLERBENCH" --pid="$TGT_PID" --slice_s=2 --rounds="$GAP_ROUNDS" \
    --times_out="$TIMESF" "${GAP_VARIANTS[@]}" >/dev/null 2>&1 || log "sampler_bench failed"
  read -r -u "${SPIN[0]}" line || die "target died"
  [[ $line == RESULT* ]] || die "target: $line"
  python3 "$SRC/bench/gap_attrib.py" "$GAPF" "$TIMESF" >"$GAPOUT" || log "gap_attrib failed"
  log "done (load average $(loadavg))"
fi

# ---------------------------------------------------------------- BPF A/B
ABOUT=$WORK/ab.txt
: >"$ABOUT"
if [[ -x $SAMPLERBENCH ]]; then
  log ""
  log "== BPF A/B: sampler_bench on the pinned spin target while it works (load average $(loadavg))"
  # name:copy_bytes:copy_bound:fp_walk:wakeup_bytes[:ring_kib[:verdict_cache[:walk_in_copy[:clock]]]]
  # (see bench/sampler_bench.cc); "old" is the configuration before the rework: 8 KiB copy,
  # kernel frame-pointer walker, wakeup per record, 8 MiB ring (records now compact either way);
  # "wake16k" the default until the wakeup threshold became a quarter of a 512 KiB ring; "null"
  # a program that returns at once (the floor of the BPF statistics).
  # All at the perf clock but "tick" (the default clock; the same program body).
  AB_VARIANTS=(null:0:none:0:0::::perf old:8192:none:-1:0:8192:::perf default:8192:both:1:::::perf
    tick:8192:both:1:::::tick wake16k:8192:both:1:16384:64:::perf kernelfp:8192:both:-1:::::perf
    nofpwalk:8192:both:0:::::perf nocache:8192:both:1:::0::perf nowalkcopy:8192:both:1::::0:perf
    fponly:0:none:1:::::perf)
  AB_ROUNDS=${AB_ROUNDS:-5}
  # Enough fixed work to outlast both sampler_bench runs (~2 s slices + start-up).
  ab_s=$(((${#AB_VARIANTS[@]} + 1) * AB_ROUNDS * 2 + 3 * 3 * 2 + 30))
  echo "run base $((ITERS * ab_s / 2))" >&"${SPIN[1]}"
  sleep 0.3
  "${PIN_TOOLS[@]}" "$SAMPLERBENCH" --pid="$TGT_PID" --slice_s=2 --rounds="$AB_ROUNDS" \
    "${AB_VARIANTS[@]}" >>"$ABOUT" 2>/dev/null || log "sampler_bench failed"
  echo "per-stage (stage timing on; adds clock reads):" >>"$ABOUT"
  "${PIN_TOOLS[@]}" "$SAMPLERBENCH" --stages --pid="$TGT_PID" --slice_s=2 --rounds=3 \
    old:8192:none:-1:0:8192:::perf default:8192:both:1:::::perf tick:8192:both:1:::::tick \
    wake16k:8192:both:1:16384:64:::perf >>"$ABOUT" \
    2>/dev/null
  read -r -u "${SPIN[0]}" _ || die "target died"  # the long run's RESULT line
  log "done (load average $(loadavg))"
fi

# ---------------------------------------------------------------- first request, memory
# start_agent PORT ARGS... -> echoes the pid once /healthz answers
start_agent() {
  local port=$1; shift
  "${PIN_TOOLS[@]}" "$AGENT" --listen_address=127.0.0.1:$port "$@" >/dev/null \
    2>>"$WORK/agent-extra.log" &
  local pid=$!
  for _ in $(seq 50); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  echo "$pid"
}
FIRST=$WORK/first.tsv  # rep first_latency_s second_latency_s
: >"$FIRST"
log ""
log "== first request of a fresh agent: $FIRST_REPS agents, 5 s windows (load average $(loadavg))"
for ((k = 1; k <= FIRST_REPS; k++)); do
  "${PIN_TARGET[@]}" "$WORK/bench-burn" -goroutines 1 -seconds 60 &
  burn=$!; EXTRA_PIDS+=" $burn"
  p3=$((PORT + 2))
  a3=$(start_agent "$p3" --target_pid="$burn"); EXTRA_PIDS+=" $a3"
  sleep 1
  l1=$(curl -s -o /dev/null -w '%{time_total}' "127.0.0.1:$p3/debug/pprof/profile?seconds=5")
  l2=$(curl -s -o /dev/null -w '%{time_total}' "127.0.0.1:$p3/debug/pprof/profile?seconds=5")
  echo "$k $(python3 -c "print(f'{$l1 - 5:.4f} {$l2 - 5:.4f}')")" >>"$FIRST"
  kill "$a3" "$burn" 2>/dev/null; wait "$a3" "$burn" 2>/dev/null
done

RSSF=$WORK/rss.tsv  # window rss_kb hwm_kb latency_s agent_cpu_frac samples
: >"$RSSF"
log ""
log "== memory: $RSS_WINDOWS consecutive ${RSS_WINDOW_S} s windows, bench-burn with 2 busy" \
  "goroutines, unpinned (load average $(loadavg))"
"$WORK/bench-burn" -goroutines 2 -seconds $((RSS_WINDOWS * (RSS_WINDOW_S + 2) + 20)) &
burn=$!; EXTRA_PIDS+=" $burn"
p4=$((PORT + 3))
a4=$(start_agent "$p4" --target_pid="$burn"); EXTRA_PIDS+=" $a4"
sleep 1
log "  agent VmRSS before the first window: $(awk '/VmRSS/{print $2}' /proc/"$a4"/status) kB"
for ((k = 1; k <= RSS_WINDOWS; k++)); do
  s0=$(metric pprof_sidecar_samples_total "$p4"); c0=$(proc_cpu_ticks "$a4"); t0=$(now_ns)
  lat=$(curl -s -o /dev/null -w '%{time_total}' \
    "127.0.0.1:$p4/debug/pprof/profile?seconds=$RSS_WINDOW_S")
  t1=$(now_ns); c1=$(proc_cpu_ticks "$a4"); s1=$(metric pprof_sidecar_samples_total "$p4")
  echo "$k $(awk '/VmRSS/{print $2}' /proc/"$a4"/status) $(awk '/VmHWM/{print $2}' /proc/"$a4"/status)" \
    "$(python3 -c "print(f'{$lat - $RSS_WINDOW_S:.4f} {($c1 - $c0) / $CLK_TCK / (($t1 - $t0) / 1e9):.5f}')")" \
    "$((s1 - s0))" >>"$RSSF"
  log "  window $k/$RSS_WINDOWS done (load average $(loadavg))"
done
kill "$a4" "$burn" 2>/dev/null; wait "$a4" "$burn" 2>/dev/null

# ---------------------------------------------------------------- cold symbolization
SYMOUT=$WORK/sym.tsv
: >"$SYMOUT"
log ""
if [[ -x $SYMBENCH && -x $BIG_GO_BINARY ]]; then
  log "== cold symbolization: $BIG_GO_BINARY (load average $(loadavg))"
  for mode in warmcache evict; do
    for rep in 1 2 3; do
      args=(); [[ $mode == evict ]] && args=(--evict)
      "$SYMBENCH" "${args[@]}" "$BIG_GO_BINARY" | sed "s/^/$mode $rep /" >>"$SYMOUT"
    done
  done
else
  log "== cold symbolization: skipped ($SYMBENCH or $BIG_GO_BINARY missing)"
fi

# ---------------------------------------------------------------- report
log ""
log "== results (load average at end: $(loadavg); total bench time $(($(date +%s) - T_START)) s)"
python3 - "$RESULTS" "$AGENTX" "$SYMOUT" "$TARGET_CPU_S" "$ITERS" "$IDLE_NS" "$FIRST" "$RSSF" \
  "$ABOUT" "$STOLENF" "$GAPOUT" <<'EOF'
import statistics as st, sys, collections
res_f, agent_f, sym_f, cpu_s, iters, idle_ns, first_f, rss_f, ab_f, stolen_f, gap_f = sys.argv[1:12]
idle_ns = float(idle_ns)
rounds = collections.defaultdict(dict)
bcc_bpf = []
for line in open(res_f):
    f = line.split()
    r, c, wall, cpu = int(f[0]), f[1], int(f[2]), int(f[3])
    rounds[r][c] = (wall, cpu)
    if c == "bcc" and len(f) >= 6 and int(f[5]) > 0:
        bcc_bpf.append(int(f[4]) / int(f[5]))

def spread(xs, fmt):
    xs = sorted(xs)
    return f"{fmt(st.median(xs))} [{fmt(xs[0])} .. {fmt(xs[-1])}]"

pct = lambda x: f"{(x - 1) * 100:+.2f}%"
print(f"fixed work: {iters} iterations (~{cpu_s} CPU-s); rounds: {len(rounds)}")
print("slowdown vs base, paired per round: median [min .. max]")
base_cpu = [v["base"][1] / 1e9 for v in rounds.values() if "base" in v]
base_wall = [v["base"][0] / 1e9 for v in rounds.values() if "base" in v]
print(f"  base: cpu {spread(base_cpu, lambda x: f'{x:.3f}s')}  wall {spread(base_wall, lambda x: f'{x:.3f}s')}")
for c in ("gopprof", "agent", "agentperf", "agentfp", "bcc"):
    rc = [v[c][1] / v["base"][1] for v in rounds.values() if c in v and "base" in v]
    rw = [v[c][0] / v["base"][0] for v in rounds.values() if c in v and "base" in v]
    if not rc:
        print(f"  {c:8s}: not run")
        continue
    print(f"  {c:8s}: cpu {spread(rc, pct)}  wall {spread(rw, pct)}  (n={len(rc)})")
# Noise floor: base vs base has no pairs; show the relative spread of base alone.
if len(base_cpu) > 1:
    print(f"  noise: base cpu stdev/mean {st.stdev(base_cpu) / st.mean(base_cpu) * 100:.2f}%,"
          f" wall {st.stdev(base_wall) / st.mean(base_wall) * 100:.2f}%")

stolen = collections.defaultdict(dict)
for line in open(stolen_f):
    f = line.split()
    # wall, stolen, stolen in gaps <= 1 ms, gaps, gaps <= 1 ms
    stolen[int(f[0])][f[1]] = tuple(int(x) for x in f[2:7])
if stolen:
    print("stolen time (gaps in the target's clock-reading loop), % of its time: median [min .. max]")
    bfrac = [v["base"][1] / v["base"][0] * 100 for v in stolen.values() if "base" in v]
    print(f"  base: {spread(bfrac, lambda x: f'{x:.3f}%')} (timer ticks, preemption, hypervisor)")
    for c in ("gopprof", "agent", "agentperf", "agentfp", "bcc"):
        d = [(v[c][1] / v[c][0] - v["base"][1] / v["base"][0]) * 100
             for v in stolen.values() if c in v and "base" in v]
        if not d:
            continue
        us = [x / 100 * 1e6 / 100 for x in d]  # per sample at 100 Hz
        print(f"  {c:8s}: {spread(d, lambda x: f'{x:+.3f}%')} over base"
              f" = {st.median(us):.1f} us per sample at 100 Hz (n={len(d)})")
    print("  the same counting only gaps <= 1 ms (interrupts and what runs in them; longer gaps are"
          " the vCPU or thread descheduled, the bulk of the spread above):")
    bshort = [v["base"][2] / v["base"][0] * 100 for v in stolen.values() if "base" in v]
    bgaps = [v["base"][4] / v["base"][0] * 1e9 for v in stolen.values() if "base" in v]
    print(f"  base: {spread(bshort, lambda x: f'{x:.3f}%')} in {st.median(bgaps):.0f} gaps/s")
    for c in ("gopprof", "agent", "agentperf", "agentfp", "bcc"):
        d = [(v[c][2] / v[c][0] - v["base"][2] / v["base"][0]) * 100
             for v in stolen.values() if c in v and "base" in v]
        g = [(v[c][4] / v[c][0] - v["base"][4] / v["base"][0]) * 1e9
             for v in stolen.values() if c in v and "base" in v]
        if not d:
            continue
        us = [x / 100 * 1e6 / 100 for x in d]
        print(f"  {c:8s}: {spread(d, lambda x: f'{x:+.3f}%')} over base"
              f" = {st.median(us):.1f} us per sample at 100 Hz; {st.median(g):+.0f} gaps/s (n={len(d)})")

all_ag = [l.split() for l in open(agent_f)]
for cond, label in (("agent", "defaults: tick clock, unwinding on"),
                    ("agentperf", "cpu-clock perf events, unwinding on"),
                    ("agentfp", "tick clock, frame pointers only")):
    ag = [a for a in all_ag if len(a) > 8 and a[8] == cond]
    if not ag:
        continue
    ns_inv = [int(a[1]) / int(a[2]) for a in ag if int(a[2]) > 0]
    ns_kept = [int(a[1]) / int(a[3]) for a in ag if int(a[3]) > 0]
    ns_net = [(int(a[1]) - (int(a[2]) - int(a[3])) * idle_ns) / int(a[3]) for a in ag if int(a[3]) > 0]
    lat = [float(a[4]) * 1000 for a in ag]
    cpu = [float(a[5]) * 100 for a in ag]
    rss = [int(a[6]) / 1024 for a in ag]
    hwm = max(int(a[7]) for a in ag) / 1024
    samples = [int(a[3]) for a in ag]
    agent_cpu_s = [rounds[int(a[0])][cond][1] / 1e9 for a in ag]
    per_cpu_s = [s / c for s, c in zip(samples, agent_cpu_s)]
    print(f"agent ({cond}: {label}) while profiling the pinned target at 100 Hz:")
    print(f"  BPF ns per invocation (both CPUs, incl. filtered-out): {spread(ns_inv, lambda x: f'{x:.0f}')}")
    print(f"  BPF ns per target sample (all BPF time / kept samples): {spread(ns_kept, lambda x: f'{x:.0f}')}")
    print(f"  BPF ns per target sample, net of filtered-out invocations ({idle_ns:.0f} ns each): {spread(ns_net, lambda x: f'{x:.0f}')}")
    print(f"  target samples per target CPU-second (expect ~100): {spread(per_cpu_s, lambda x: f'{x:.1f}')}")
    print(f"  agent CPU (utime+stime / window wall, % of one core): {spread(cpu, lambda x: f'{x:.2f}%')}")
    print("  agent VmRSS after each round, in order: " + ", ".join(f"{x:.1f}" for x in rss) + f" MB; VmHWM {hwm:.1f} MB")
    print(f"  latency window end -> last byte: {spread(lat, lambda x: f'{x:.0f} ms')} (n={len(lat)})")
    print(f"  (first request of this agent: {lat[0]:.0f} ms)")
fr = [l.split() for l in open(first_f)]
if fr:
    print("fresh agents, window end -> last byte (5 s windows, 1 busy goroutine):")
    print(f"  first request: {spread([float(a[1]) * 1000 for a in fr], lambda x: f'{x:.0f} ms')}"
          f"; second: {spread([float(a[2]) * 1000 for a in fr], lambda x: f'{x:.0f} ms')} (n={len(fr)})")
rs = [l.split() for l in open(rss_f)]
if rs:
    print("memory: consecutive windows on 2 busy goroutines (both CPUs):")
    print("  VmRSS after each window: " + ", ".join(f"{int(a[1]) / 1024:.1f}" for a in rs) +
          f" MB; VmHWM {max(int(a[2]) for a in rs) / 1024:.1f} MB")
    print("  samples per window: " + ", ".join(a[5] for a in rs) +
          "; agent CPU (% of one core): " + ", ".join(f"{float(a[4]) * 100:.2f}" for a in rs) +
          "; latency: " + ", ".join(f"{float(a[3]) * 1000:.0f}" for a in rs) + " ms")
gap = open(gap_f).read().strip()
if gap:
    print(gap)
ab = open(ab_f).read().strip()
if ab:
    print("BPF A/B (sampler_bench; ns/kept is net of filtered-out invocations; medians over rounds):")
    for line in ab.splitlines():
        print("  " + line)
if bcc_bpf:
    print(f"profile-bpfcc BPF ns per invocation: {spread(bcc_bpf, lambda x: f'{x:.0f}')}")

sym = collections.defaultdict(lambda: collections.defaultdict(list))
for line in open(sym_f):
    f = line.split()
    if len(f) >= 4:
        try:
            sym[f[0]][f[2]].append(float(f[3]))
        except ValueError:
            sym[f[0]][f[2]].append(f[3])
if sym:
    any_mode = next(iter(sym.values()))
    print(f"cold symbolization: {any_mode['BINARY'][0]} ({any_mode['FILE_MB'][0]:.1f} MB, "
          f"{int(any_mode['GO_FUNCS'][0])} Go funcs, {int(any_mode['PCS'][0])} random PCs, "
          f"{any_mode['LINES_PER_PC'][0]:.2f} lines/PC)")
    ms = lambda x: f"{x:.0f} ms"
    for mode, label in (("warmcache", "page cache warm"), ("evict", "page cache evicted")):
        d = sym[mode]
        if not d:
            continue
        print(f"  {label}: open+parse+10k PCs {spread(d['PCLNTAB_COLD_TOTAL_MS'], ms)};"
              f" agent path (ProcessSymbolizer) cold {spread(d['PROCESS_COLD_MS'], ms)},"
              f" warm {spread(d['PROCESS_WARM_MS'], ms)}")
        print(f"    of which ElfFile::Open {spread(d['PCLNTAB_OPEN_MS'], lambda x: f'{x:.1f} ms')},"
              f" GoPclntab::FromElf {spread(d['PCLNTAB_PARSE_MS'], lambda x: f'{x:.1f} ms')},"
              f" 10k PCs cold {spread(d['PCLNTAB_COLD_SYMBOLIZE_MS'], ms)},"
              f" warm {spread(d['PCLNTAB_WARM_SYMBOLIZE_MS'], ms)}")
EOF
log ""
log "agent log:"; sed 's/^/  /' "$WORK/agent.log" | tail -5
