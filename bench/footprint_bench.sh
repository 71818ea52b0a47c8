#!/usr/bin/env bash
# The agent's memory next to different targets (issue 11, item 7): VmRSS (with its anonymous and
# file-backed parts) and VmHWM of a fresh agent after start, and after each of N CPU profiles.
# Usage: bench/footprint_bench.sh [BUILD_DIR]   (default ./build; run as root)
#
# Targets, each with a fresh agent (defaults: tick clock, unwinding on):
#   static-go   bench/targets/burn, statically linked Go, 2 busy goroutines
#   prometheus  Debian's /usr/bin/prometheus (a large, dynamically linked Go server, cgo: its
#               threads start in libc), scraping itself every second while a client loop reads
#               its /metrics and runs queries
#   c-libc      tests/targets/libc_frames (C, -O2 -g), most of its time in glibc's printf/strtod/
#               qsort; with libc6-dbg installed the agent reads libc's DWARF for file:line
# Env knobs: PROFILES (default 4), PROFILE_S (seconds per profile, default 5), SETTLE_S (seconds
# between the agent's start and the first reading, default 3), TARGETS (default all three).
#
# Printed per target: "start" and "profile K" rows (VmRSS, RssAnon, RssFile, VmHWM in MB), and
# for the last profile the samples and how many of its libc locations carry file:line and inlined
# frames. BENCHMARKS.md records the results.
set -uo pipefail

BUILD=$(cd "${1:-./build}" && pwd) || { echo "no build dir ${1:-./build}" >&2; exit 2; }
SRC=$(cd "$(dirname "$0")/.." && pwd)
AGENT=$BUILD/pprof-sidecar
PROFILES=${PROFILES:-4}
PROFILE_S=${PROFILE_S:-5}
SETTLE_S=${SETTLE_S:-3}
TARGETS=${TARGETS:-static-go prometheus c-libc}
WORK=$(mktemp -d /tmp/pprof-sidecar-footprint.XXXXXX)
PORT=$((20000 + RANDOM % 20000))
PROM_PORT=$((PORT + 1))

log() { printf '%s\n' "$*"; }
die() { echo "footprint_bench: $*" >&2; exit 1; }
[[ $EUID -eq 0 ]] || die "must run as root (BPF)"
[[ -x $AGENT ]] || die "$AGENT missing: build first"

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

# mem PID -> "rss anon file hwm" in MB
mem() {
  awk '/^VmRSS:/{r=$2} /^RssAnon:/{a=$2} /^RssFile:/{f=$2} /^VmHWM:/{h=$2}
       END{printf "%.1f %.1f %.1f %.1f", r/1024, a/1024, f/1024, h/1024}' "/proc/$1/status"
}
row() {  # label PID
  read -r rss anon file hwm <<<"$(mem "$2")"
  printf '  %-11s VmRSS %6s MB (anon %5s, file %5s)  VmHWM %6s MB\n' "$1" "$rss" "$anon" "$file" \
    "$hwm"
}

# libc_summary PROFILE -> samples, libc locations, of which with file:line, with inlined frames
libc_summary() {
  go tool pprof -raw "$1" 2>/dev/null | awk '
    /^Samples:/ {sec = "s"; next} /^Locations/ {sec = "l"; next} /^Mappings/ {sec = "m"; next}
    sec == "s" && /^ *[0-9]+ +[0-9]+:/ {samples += $1}
    sec == "m" && /libc\.so/ {split($1, f, ":"); libc[f[1]] = 1}
    sec == "l" && /^ +[0-9]+: 0x/ {
      n++; mp[n] = ""; if (match($0, /M=[0-9]+/)) mp[n] = substr($0, RSTART + 2, RLENGTH - 2)
      fl[n] = $0 ~ /:[1-9][0-9]*:[0-9]+ s=/; lines[n] = 1; next }
    sec == "l" && n && /^ +[^ 0-9]/ {lines[n]++}
    END {
      for (i = 1; i <= n; i++) if (mp[i] in libc) { c++; cl += fl[i]; ci += lines[i] > 1 }
      printf "%d samples; libc locations %d, with file:line %d, with inlined frames %d",
             samples, c, cl, ci }'
}

# measure NAME TARGET_PID
measure() {
  local name=$1 tpid=$2 port=$((PORT + 10 + RANDOM % 1000))
  "$AGENT" --target_pid="$tpid" --listen_address=127.0.0.1:$port 2>"$WORK/agent-$name.log" &
  local apid=$!
  PIDS+=("$apid")
  for _ in $(seq 600); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  curl -sf "127.0.0.1:$port/healthz" >/dev/null || { cat "$WORK/agent-$name.log"; die "agent did not start"; }
  sleep "$SETTLE_S"
  log "$name (target pid $tpid: $(readlink "/proc/$tpid/exe"); load average $(cut -d' ' -f1-3 /proc/loadavg))"
  row start "$apid"
  for ((k = 1; k <= PROFILES; k++)); do
    curl -sf -o "$WORK/$name-$k.pb.gz" "127.0.0.1:$port/debug/pprof/profile?seconds=$PROFILE_S" ||
      log "  profile $k failed"
    row "profile $k" "$apid"
  done
  log "  last profile: $(libc_summary "$WORK/$name-$PROFILES.pb.gz")"
  kill "$apid"; wait "$apid" 2>/dev/null
}

log "== agent footprint: $(date -u '+%Y-%m-%d %H:%M UTC'); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') x $(nproc); kernel $(uname -r)"
log "   $PROFILES profiles of $PROFILE_S s each; libc6-dbg: $(dpkg-query -W -f='${Version}' libc6-dbg 2>/dev/null || echo 'not installed')"

for t in $TARGETS; do
  case $t in
    static-go)
      (cd "$SRC/bench/targets/burn" && CGO_ENABLED=0 GO111MODULE=off GOFLAGS= go build -o "$WORK/burn" .) ||
        die "go build of bench/targets/burn failed"
      "$WORK/burn" -goroutines 2 -seconds 3600 & tpid=$!; PIDS+=("$tpid")
      measure static-go "$tpid"
      kill "$tpid"
      ;;
    prometheus)
      command -v prometheus >/dev/null || die "prometheus missing (apt-get install prometheus)"
      cat >"$WORK/prom.yml" <<CFG
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: self
    static_configs:
      - targets: ['127.0.0.1:$PROM_PORT']
CFG
      prometheus --config.file="$WORK/prom.yml" --storage.tsdb.path="$WORK/promdata" \
        --web.listen-address=127.0.0.1:$PROM_PORT >"$WORK/prom.log" 2>&1 & tpid=$!; PIDS+=("$tpid")
      for _ in $(seq 100); do curl -sf "127.0.0.1:$PROM_PORT/-/ready" >/dev/null && break; sleep 0.1; done
      curl -sf "127.0.0.1:$PROM_PORT/-/ready" >/dev/null || { tail "$WORK/prom.log"; die "prometheus did not start"; }
      ( while :; do
          curl -s -o /dev/null "127.0.0.1:$PROM_PORT/metrics"
          curl -s -o /dev/null "127.0.0.1:$PROM_PORT/api/v1/query?query=rate(prometheus_http_requests_total%5B30s%5D)"
        done ) & load=$!; PIDS+=("$load")
      measure prometheus "$tpid"
      kill "$load" "$tpid"
      ;;
    c-libc)
      gcc -O2 -g -fno-omit-frame-pointer -o "$WORK/libc_frames" \
        "$SRC/tests/targets/libc_frames/libc_frames.c" || die "gcc failed"
      "$WORK/libc_frames" 0 >/dev/null & tpid=$!; PIDS+=("$tpid")
      measure c-libc "$tpid"
      kill "$tpid"
      ;;
    *) die "unknown target $t" ;;
  esac
done
