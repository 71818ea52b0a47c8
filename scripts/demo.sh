#!/usr/bin/env bash
# The user's day on one machine: installs dependencies, builds the agent, starts the bundled demo
# target (a Go program burning CPU in main.hotPath and main.coldPath, 3:1), starts pprof-sidecar
# next to it, fetches a CPU profile over HTTP exactly as from a pod, and prints where it is and
# how to open it. Run as root (BPF). Usage: scripts/demo.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
seconds=${1:-10}
port=${PPROF_SIDECAR_DEMO_PORT:-6060}
out="$root/out"
mkdir -p "$out"

bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j2 --target pprof-sidecar

echo "== building the demo target (tests/targets/go_cpu_split) =="
(cd tests/targets/go_cpu_split &&
  GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= go build -o "$out/demo-target" .)

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

"$out/demo-target" -goroutines 2 -hash &
pids+=($!)
target=$!
build/pprof-sidecar --target_name='demo-target' --listen_address="127.0.0.1:$port" \
  2>"$out/agent.log" &
pids+=($!)

for _ in $(seq 200); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$port/healthz" || { echo "agent did not start:"; cat "$out/agent.log"; exit 1; }

echo "== fetching a ${seconds}s CPU profile of pid $target =="
curl -sf -o "$out/cpu.pb.gz" "http://127.0.0.1:$port/debug/pprof/profile?seconds=$seconds"
go tool pprof -top -nodecount=15 "$out/cpu.pb.gz" 2>/dev/null | sed -n 1,25p

cat <<EOT

Profile written to: $out/cpu.pb.gz
Open it:            go tool pprof -http=:8080 $out/cpu.pb.gz   (then /ui/flamegraph)
Agent log:          $out/agent.log
EOT
