#!/bin/sh
# OOM flight recorder benchmark (issue 16). Usage: bench/oom_bench.sh [BUILD_DIR] [KILLS]  (root)
# Builds the OOM test targets and runs build/oom_bench: watcher CPU between snapshots, a Go heap
# snapshot's cost next to a /debug/pprof/heap request's, and how often the at-kill snapshot is
# saved over KILLS real OOM kills of a Go and a C target.
set -eu
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$SRC/build}
KILLS=${2:-10}
WORK=$(mktemp -d)
GO=${GO:-/usr/local/go/bin/go}
cmake --build "$BUILD" --target oom_bench >/dev/null
mkdir -p "$WORK/go" && cp "$SRC/tests/targets/oom_go_leak/main.go" "$WORK/go/"
(cd "$WORK/go" && GO111MODULE=off GOFLAGS= "$GO" build -o "$WORK/oom_go_leak" .)
cc -O1 -g -fno-omit-frame-pointer -o "$WORK/oom_c_leak" "$SRC/tests/targets/oom_c_leak/oom_c_leak.c"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
"$BUILD/oom_bench" "$WORK/oom_go_leak" "$WORK/oom_c_leak" "$KILLS"
rm -rf "$WORK"
