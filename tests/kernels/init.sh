#!/bin/busybox sh
# /init of the kernel-matrix VM (tests/kernels/run_vm_test.sh). Runs as pid 1 on the kernel under
# test with only proc, sysfs and devtmpfs mounted (no tracefs, no debugfs, as in a pod), runs the
# agent next to a target once per run named on the kernel command line, and writes what it
# fetched to the second serial port (ttyS1) for the host to check:
#
#   pprof_runs=NAME[:FLAG[:FLAG...]][,NAME...]   NAME "heap*": the malloc target, else the CPU one
#
# FLAGs are the agent's, except caps=CAP+CAP... (run it as a pod would: root with only those
# capabilities, kernel.kptr_restrict=1), memlock=KIB (its RLIMIT_MEMLOCK, soft and hard) and
# paranoid=N (kernel.perf_event_paranoid for the run).
#
# Output on ttyS1, one item per block (profiles base64-encoded):
#   @@begin RUN ITEM
#   ...
#   @@end RUN ITEM
# Items: startup (ms from the agent's exec to a ready /healthz, before the target starts),
# healthz (once the agent found the target; the HTTP status line first), cpu.status, cpu.truth, cpu.pb.gz.b64, heap.status, heap.truth,
# heap.pb.gz.b64, metrics, bpftool, agent.log.
# Ends with "@@done", then powers off.
/bin/busybox --install -s /bin
export PATH=/bin:/agent
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /tmp && mount -t tmpfs tmp /tmp
ip link set lo up
# Run time and count of every BPF program in `bpftool prog show`.
echo 1 >/proc/sys/kernel/bpf_stats_enabled

PORT=6060
stty -F /dev/ttyS1 raw -echo 2>/dev/null
exec 9>/dev/ttyS1

log() { echo "vm-init: [$(cut -d' ' -f1 /proc/uptime)] $*" >/dev/console; }
begin() { echo "@@begin $1 $2" >&9; }
end() { echo "@@end $1 $2" >&9; }
emit() { begin "$1" "$2"; cat "$3" >&9; end "$1" "$2"; }
emit_b64() { begin "$1" "$2"; base64 "$3" >&9; end "$1" "$2"; }
# Milliseconds since boot (/proc/uptime has 10 ms resolution).
now_ms() { awk '{printf "%d\n", $1 * 1000}' /proc/uptime; }
# Whether process PID runs (a child that exited stays a zombie until waited for).
alive() { [ -f /proc/$1/status ] && ! grep -q '^State:.*Z' /proc/$1/status; }

# get PATH OUT: fetches PATH from the agent to OUT; prints the HTTP status line (or "failed: ...").
get() { http_get $PORT "$1" "$2"; }

# wait_healthz AGENT_PID PATTERN: polls /healthz until its body has a line matching PATTERN (or
# it answers 503, or the agent exits, or 120 s pass); leaves the answer in /tmp/healthz.out.
wait_healthz() {
  local status="" i=0
  while [ $i -lt 1200 ]; do
    status=$(get /healthz /tmp/healthz)
    if grep -q "$2" /tmp/healthz 2>/dev/null; then break; fi
    case "$status" in *503*) break ;; esac
    alive "$1" || break
    sleep 0.1
    i=$((i + 1))
  done
  { echo "$status"; cat /tmp/healthz 2>/dev/null; } >/tmp/healthz.out
}

# start_agent RUN TARGET_NAME FLAGS...: starts the agent for the target named TARGET_NAME (which
# does not run yet) and waits until it is ready; emits the startup time (ms from exec to ready).
# Sets $agent.
start_agent() {
  local run=$1 name=$2
  shift 2
  local start=$(now_ms)
  if [ -n "$POD_CAPS" ]; then
    # As in a pod: only these capabilities (the bounding set limits what root gets at exec),
    # RLIMIT_MEMLOCK as a container runtime may leave it, kallsyms hidden from the agent.
    echo 1 >/proc/sys/kernel/kptr_restrict
    (
      ulimit -l "$POD_MEMLOCK"
      exec /agent/setpriv --bounding-set "-all,+$(echo "$POD_CAPS" | sed 's/+/,+/g')" --inh-caps -all -- \
        pprof-sidecar --target_name="^$name\$" --rediscover_interval_ms=100 \
        --listen_address=127.0.0.1:$PORT "$@"
    ) >/tmp/agent.log 2>&1 &
  else
    pprof-sidecar --target_name="^$name\$" --rediscover_interval_ms=100 \
      --listen_address=127.0.0.1:$PORT "$@" >/tmp/agent.log 2>&1 &
  fi
  agent=$!
  wait_healthz $agent '^cpu: '
  begin "$run" startup
  echo $(($(now_ms) - start)) >&9
  end "$run" startup
  log "$run: agent $agent: $(sed -n 3p /tmp/healthz.out)"
}

# found RUN: waits until the agent has found the target; emits /healthz.
found() {
  wait_healthz $agent '^target: pid'
  emit "$1" healthz /tmp/healthz.out
}

stop_agent() {
  kill "$1" 2>/dev/null
  (sleep 20; kill -9 "$1" 2>/dev/null) &
  local watchdog=$!
  wait "$1" 2>/dev/null
  kill $watchdog 2>/dev/null
}

# finish RUN AGENT_PID: the agent's metrics, its BPF programs, then its log after it stopped.
finish() {
  get /metrics /tmp/metrics >/dev/null
  emit "$1" metrics /tmp/metrics
  bpftool prog show >/tmp/bpftool 2>&1
  emit "$1" bpftool /tmp/bpftool
  stop_agent "$2"
  log "$1: agent stopped"
  emit "$1" agent.log /tmp/agent.log
}

# truth TARGET N: asks the CPU target for its own account (SIGUSR1) and waits for its Nth line.
truth() {
  kill -USR1 "$1"
  local i=0
  while [ "$(grep -c '^truth' /tmp/truth)" -lt "$2" ] && [ $i -lt 100 ]; do
    sleep 0.1
    i=$((i + 1))
  done
}

# cpu_run RUN FLAGS...: the CPU target (two threads in spin_hot ~75 % and spin_cold ~25 % of their
# CPU time, as it measures itself before and after the window) and a 5 s CPU profile.
cpu_run() {
  local run=$1
  shift
  start_agent "$run" cpu_split --cpu_sampling_hz=97 "$@"
  cpu_split 2 >/tmp/truth &
  local target=$!
  found "$run"
  truth "$target" 1
  local status=$(get '/debug/pprof/profile?seconds=5' /tmp/cpu.pb.gz)
  truth "$target" 2
  log "$run: profile: $status"
  begin "$run" cpu.status; echo "$status" >&9; end "$run" cpu.status
  emit "$run" cpu.truth /tmp/truth
  [ -s /tmp/cpu.pb.gz ] && emit_b64 "$run" cpu.pb.gz.b64 /tmp/cpu.pb.gz
  finish "$run" "$agent"
  kill -9 "$target" 2>/dev/null
  wait "$target" 2>/dev/null
  rm -f /tmp/cpu.pb.gz /tmp/healthz /tmp/truth
}

# metric NAME: its value in /metrics, or -1.
metric() {
  get /metrics /tmp/metric >/dev/null
  awk -v n="$1" '$1 == n {print $2; f=1} END {if (!f) print -1}' /tmp/metric 2>/dev/null
}

# wait_line FILE PREFIX: waits up to 120 s for a line starting with PREFIX.
wait_line() {
  local i=0
  while ! grep -q "^$2" "$1" && [ $i -lt 1200 ]; do sleep 0.1; i=$((i + 1)); done
  grep -m1 "^$2" "$1"
}

# heap_run RUN FLAGS...: the malloc target (big_site allocates 3 bytes for each of small_site's)
# under the agent's malloc probes, and its allocs profile.
heap_run() {
  local run=$1
  shift
  start_agent "$run" heap_c_split --heap_sample_bytes=16384 "$@"
  rm -f /tmp/heap.in
  mkfifo /tmp/heap.in
  heap_c_split </tmp/heap.in >/tmp/heap.out &
  local target=$!
  exec 8>/tmp/heap.in
  found "$run"
  local i=0
  while [ "$(metric pprof_sidecar_malloc_sampler_attached)" != 1 ] && [ $i -lt 600 ]; do
    sleep 0.1
    i=$((i + 1))
  done
  echo "alloc 32768" >&8
  wait_line /tmp/heap.out done >/tmp/heap.truth
  log "$run: allocated: $(cat /tmp/heap.truth)"
  emit "$run" heap.truth /tmp/heap.truth
  local status=$(get /debug/pprof/allocs /tmp/heap.pb.gz)
  log "$run: allocs: $status"
  begin "$run" heap.status; echo "$status" >&9; end "$run" heap.status
  [ -s /tmp/heap.pb.gz ] && emit_b64 "$run" heap.pb.gz.b64 /tmp/heap.pb.gz
  finish "$run" "$agent"
  echo quit >&8
  exec 8>&-
  wait "$target" 2>/dev/null
  rm -f /tmp/heap.pb.gz /tmp/healthz
}

runs=$(tr ' ' '\n' </proc/cmdline | sed -n 's/^pprof_runs=//p')
begin vm kernel
uname -r >&9
end vm kernel
log "kernel $(uname -r), runs: $runs"
kptr_restrict=$(cat /proc/sys/kernel/kptr_restrict)
paranoid=$(cat /proc/sys/kernel/perf_event_paranoid)
log "kernel.kptr_restrict=$kptr_restrict kernel.perf_event_paranoid=$paranoid"
for spec in $(echo "$runs" | tr ',' ' '); do
  name=${spec%%:*}
  flags=""
  POD_CAPS=""
  POD_MEMLOCK=unlimited
  if [ "$name" != "$spec" ]; then
    for f in $(echo "${spec#*:}" | tr ':' ' '); do
      case "$f" in
        caps=*) POD_CAPS=${f#caps=} ;;
        memlock=*) POD_MEMLOCK=${f#memlock=} ;;
        paranoid=*) echo "${f#paranoid=}" >/proc/sys/kernel/perf_event_paranoid ;;
        *) flags="$flags $f" ;;
      esac
    done
  fi
  case "$name" in
    heap*) heap_run "$name" $flags ;;
    *) cpu_run "$name" $flags ;;
  esac
  echo "$kptr_restrict" >/proc/sys/kernel/kptr_restrict
  echo "$paranoid" >/proc/sys/kernel/perf_event_paranoid
done
begin vm dmesg
dmesg >&9
end vm dmesg
echo "@@done" >&9
sync
poweroff -f
