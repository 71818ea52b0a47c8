#!/usr/bin/env bash
# The agent works with exactly the default capability set of the pod spec (BPF, PERFMON,
# SYS_PTRACE, SYSLOG; root uid like `runAsUser: 0` with `drop: [ALL]`), and fails when one of
# BPF, PERFMON, SYS_PTRACE is removed; without SYSLOG it works with kernel frames as [kernel].
# As in a pod: a mount namespace where tracefs and debugfs are not mounted (an empty read-only
# tmpfs over their mount points, whatever the host has there), and kernel.kptr_restrict=1 (the
# usual node setting; restored at exit). The target runs as another uid (nobody), as an app container usually does, so reading
# its /proc/PID/{maps,exe,root} needs CAP_SYS_PTRACE. Capabilities are set with setpriv: the
# bounding set limits what the root process gets at exec, as the container runtime does.
# The failure message is checked for the capability's name; a message that does not name it is
# reported (NOTE lines) and fails only with STRICT_CAP_MESSAGES=1.
# Env: PPROF_SIDECAR_AGENT (default build/pprof-sidecar; built with CMake if missing).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

AGENT="${PPROF_SIDECAR_AGENT:-$ROOT/build/pprof-sidecar}"
if [ ! -x "$AGENT" ]; then
  log "building $AGENT"
  cmake -S "$ROOT" -B "$(dirname "$AGENT")" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$(dirname "$AGENT")" -j2 --target pprof-sidecar >/dev/null
fi
GO="${GO:-go}"
work="$(mktemp -d "$K8S_WORK/caps.XXXXXX")"
chmod 755 "$work"
target_pid=""
agent_pid=""
cleanup() {
  [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null || true
  [ -n "$target_pid" ] && kill "$target_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
kptr_before="$(cat /proc/sys/kernel/kptr_restrict)"
echo 1 >/proc/sys/kernel/kptr_restrict
trap 'cleanup; echo "$kptr_before" >/proc/sys/kernel/kptr_restrict' EXIT
passed=0
failed=0
notes=0
ok() { passed=$((passed + 1)); log "ok   $*"; }
bad() { failed=$((failed + 1)); log "FAIL $*"; }

(cd "$ROOT/tests/targets/go_cpu_split" && GO111MODULE=off CGO_ENABLED=0 "$GO" build -o "$work/caps_target" .)
chmod 755 "$work/caps_target"
setpriv --reuid 65534 --regid 65534 --clear-groups -- "$work/caps_target" -goroutines 1 -seconds 600 \
  >/dev/null 2>&1 &
target_pid=$!

# run_agent CAPS: starts the agent with exactly CAPS (comma list of setpriv names, may be empty),
# requests a 3 s profile, and leaves the results in $work/{agent.log,code,prof.pb.gz}.
run_agent() {
  local caps="$1" port=$((20000 + RANDOM % 20000)) bset="-all"
  [ -n "$caps" ] && bset="-all,+${caps//,/,+}"
  : >"$work/agent.log"
  rm -f "$work/prof.pb.gz" "$work/code" "$work/healthz" "$work/healthz_code"
  # As in a pod, the target's binary is not in the agent's filesystem (it lives in another
  # container's root): the directory holding it is hidden in the agent's mount namespace, so the
  # agent reaches it only through /proc/PID (which needs CAP_SYS_PTRACE).
  TARGET_DIR="$work" unshare --mount --propagation private -- sh -c '
      for d in /sys/kernel/tracing /sys/kernel/debug; do
        [ -d "$d" ] && mount -t tmpfs -o ro,size=4k none "$d"
      done
      mount -t tmpfs -o ro,size=4k none "$TARGET_DIR"
      exec "$@"' sh \
    setpriv --bounding-set "$bset" --inh-caps -all -- "$AGENT" --target_pid="$target_pid" \
    --listen_address="127.0.0.1:$port" >"$work/agent.log" 2>&1 &
  agent_pid=$!
  local i
  for i in $(seq 1 50); do
    grep -q 'serving http' "$work/agent.log" && break
    kill -0 "$agent_pid" 2>/dev/null || break
    sleep 0.2
  done
  if grep -q 'serving http' "$work/agent.log"; then
    curl -s --max-time 5 -o "$work/healthz" -w '%{http_code}' "http://127.0.0.1:$port/healthz" \
      >"$work/healthz_code" || echo 000 >"$work/healthz_code"
    curl -s --max-time 30 -o "$work/prof.pb.gz" -w '%{http_code}' \
      "http://127.0.0.1:$port/debug/pprof/profile?seconds=3" >"$work/code" || echo 000 >"$work/code"
    kill "$agent_pid" 2>/dev/null || true
  else
    echo exited >"$work/code"
  fi
  wait "$agent_pid" 2>/dev/null || true
  agent_pid=""
}

profile_names_target() {
  [ -s "$work/prof.pb.gz" ] &&
    "$GO" tool pprof -symbolize=none -top "$work/prof.pb.gz" 2>/dev/null | grep -q 'main.hotPath'
}

for caps in "bpf,perfmon,sys_ptrace,syslog" "bpf,perfmon,sys_ptrace"; do
  run_agent "$caps"
  if [ "$(cat "$work/code")" = 200 ] && profile_names_target; then
    ok "exactly ${caps^^}, no tracefs, kptr_restrict=1: profile of a uid-65534 target names main.hotPath"
  else
    bad "capability set ${caps^^}: HTTP $(cat "$work/code")"
    sed 's/^/    agent: /' "$work/agent.log" >&2
  fi
  # The default clock is the tick, and it needs neither tracefs nor kernel symbols.
  if grep -q "^cpu: tick clock" "$work/healthz" 2>/dev/null; then
    ok "${caps^^}: /healthz names the tick clock"
  else
    bad "${caps^^}: /healthz does not name the tick clock: $(cat "$work/healthz" 2>/dev/null)"
  fi
done

for missing in bpf perfmon sys_ptrace; do
  caps="bpf,perfmon,sys_ptrace,syslog"
  caps="$(echo "$caps" | tr ',' '\n' | grep -vx "$missing" | paste -sd,)"
  run_agent "$caps"
  code="$(cat "$work/code")"
  # What the user sees: the agent's log, and the HTTP answer when it got that far.
  msg="$(cat "$work/agent.log")"
  if [ "$code" = 200 ] && [ -s "$work/prof.pb.gz" ]; then
    msg+=$'\n'"$("$GO" tool pprof -symbolize=none -top "$work/prof.pb.gz" 2>&1 | sed -n 1,12p)"
  elif [ "$code" != exited ]; then
    msg+=$'\n'"HTTP $code: $(head -c 400 "$work/prof.pb.gz" 2>/dev/null)"
  fi
  if [ "$code" = 200 ] && profile_names_target; then
    bad "without CAP_${missing^^}: the agent still produced a symbolized profile"
  else
    ok "without CAP_${missing^^}: no symbolized profile (agent: ${code})"
  fi
  upper="${missing^^}"
  if [ "$missing" != sys_ptrace ]; then
    # No CPU profile can be taken: readiness says so, with the reason.
    if [ "$(cat "$work/healthz_code" 2>/dev/null)" = 503 ] &&
       grep -q "^cpu: unavailable: .*CAP_${upper}" "$work/healthz"; then
      ok "without CAP_${upper}: /healthz answers 503 naming the capability"
    else
      bad "without CAP_${upper}: /healthz $(cat "$work/healthz_code" 2>/dev/null): $(cat "$work/healthz" 2>/dev/null)"
    fi
  fi
  if [ "$missing" = sys_ptrace ]; then
    # The agent runs, so /healthz must tell the operator why profiles are unsymbolized.
    if grep -q "CAP_SYS_PTRACE" "$work/healthz" 2>/dev/null; then
      ok "without CAP_SYS_PTRACE: /healthz names the capability"
    else
      bad "without CAP_SYS_PTRACE: /healthz does not name it: $(cat "$work/healthz" 2>/dev/null)"
    fi
  fi
  if grep -qiE "CAP_${upper}|\\b${upper}\\b" <<<"$msg"; then
    ok "without CAP_${upper}: the message names the capability"
  else
    notes=$((notes + 1))
    log "NOTE without CAP_${upper}: the agent's message does not name the capability; it printed:"
    sed 's/^/    | /' <<<"$msg" >&2
    [ -n "${STRICT_CAP_MESSAGES:-}" ] && failed=$((failed + 1))
  fi
done

echo "caps_test: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
