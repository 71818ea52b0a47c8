#!/usr/bin/env bash
# Pod end-to-end with podman (no cluster): the pprof-sidecar image, the webhook and the agent as
# a Kubernetes pod would run them.
#  1. webhook way: the chart is rendered (helm template); its webhook Deployment's args and its
#     generated TLS Secret run the webhook from the image; the example controller Deployment's pod
#     is sent to it as a real AdmissionReview v1 over TLS and the returned JSONPatch is applied.
#  2. kustomize way: deploy/kustomize (the documented patch) rendered with kubectl kustomize.
#  3. no restart: the agent joins a running pod the way an ephemeral container does.
#  4. OOM: the kustomize pod with a manager that leaks until the kernel OOM-kills it at its 128Mi
#     limit; podman restarts it; the killed process's heap snapshots are fetched through the proxy.
# Each pod runs with `podman kube play` (shareProcessNamespace honoured); from inside the pod's
# network namespace curl fetches /debug/pprof/profile?seconds=5 through the proxy on :8443, and
# `go tool pprof` must name the target's functions.
# Stand-ins, each only because this machine cannot pull images or has an older runtime profile:
#  - quay.io/brancz/kube-rbac-proxy is replaced by tests/k8s/rbac_proxy_standin (same flags,
#    TLS, --allow-paths, requires a bearer token, but no TokenReview: there is no API server);
#  - Debian 12's podman seccomp profile allows bpf/perf_event_open only with CAP_SYS_ADMIN; the
#    test uses a copy that allows them with CAP_BPF/CAP_PERFMON, as current containerd/moby
#    profiles do, so the pod keeps the least-privilege securityContext;
#  - podman 4.3 neither expands $(VAR) in args nor honours resourceFieldRef's containerName (it
#    gives the agent its own limit): admit_pod.mjs does the kubelet's part, so the agent gets
#    --target_memory_limit_bytes=<the manager's limit> (podman would pass the text literally).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ensure_debs podman runc catatonit containernetworking-plugins iptables openssl curl util-linux
TOOLS="${PPROF_SIDECAR_K8S_TOOLS:-$ROOT/build-k8s-tools}"
bash "$ROOT/scripts/k8s-tools.sh" "$TOOLS" >/dev/null
export K8S_TOOLS="$TOOLS"
GO="${GO:-go}"
image_exists "$IMAGE" || bash "$ROOT/tests/k8s/build_image.sh"

work="$(mktemp -d "$K8S_WORK/e2e.XXXXXX")"
WEBHOOK_CTR=pprof-e2e-webhook
PODS=()
cleanup() {
  for p in "${PODS[@]}"; do podman pod rm -f "$p" >/dev/null 2>&1 || true; done
  podman rm -f --ignore "$WEBHOOK_CTR" >/dev/null 2>&1 || true
  podman rm -f --ignore pprof-e2e-ephemeral >/dev/null 2>&1 || true
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
passed=0
failed=0
ok() { passed=$((passed + 1)); log "ok   $*"; }
bad() { failed=$((failed + 1)); log "FAIL $*"; }

problem="$(image_size_problem "$IMAGE")"
if [ -z "$problem" ]; then
  ok "[image] $IMAGE is $(($(podman image inspect --format '{{.Size}}' "$IMAGE") / 1000000)) MB (bound $((IMAGE_MAX_BYTES / 1000000)) MB)"
else
  bad "[image] $problem"
fi

# Seccomp profile of a current runtime: bpf with CAP_BPF, perf_event_open with CAP_PERFMON.
node --input-type=module -e '
  import { readFileSync, writeFileSync } from "node:fs";
  const p = JSON.parse(readFileSync("/usr/share/containers/seccomp.json", "utf8"));
  const moved = ["bpf", "perf_event_open"];
  for (const s of p.syscalls) {
    const capOnly = JSON.stringify(s.includes?.caps || []) === "[\"CAP_SYS_ADMIN\"]" ||
                    JSON.stringify(s.excludes?.caps || []) === "[\"CAP_SYS_ADMIN\"]";
    if (capOnly && s.action === "SCMP_ACT_ERRNO") s.names = s.names.filter((n) => !moved.includes(n));
  }
  p.syscalls.push({ names: ["bpf"], action: "SCMP_ACT_ALLOW", includes: { caps: ["CAP_BPF"] } });
  p.syscalls.push({ names: ["perf_event_open"], action: "SCMP_ACT_ALLOW", includes: { caps: ["CAP_PERFMON"] } });
  writeFileSync(process.argv[1], JSON.stringify(p));' "$work/seccomp.json"
{ sed 's/^\[containers\]$/[containers]\nseccomp_profile = "'"${work//\//\\/}"'\/seccomp.json"/' \
    "$ROOT/tests/k8s/containers.conf"; } >"$work/containers.conf"
export CONTAINERS_CONF="$work/containers.conf"

# Local images, static Go binaries FROM scratch (as distroless/static controllers are): the
# example controller (Go program go_cpu_split as /manager) and the proxy
# stand-in.
log "building the example controller and the kube-rbac-proxy stand-in"
mkdir -p "$work/ctl" "$work/proxy"
(cd "$ROOT/tests/targets/go_cpu_split" && GO111MODULE=off CGO_ENABLED=0 "$GO" build -o "$work/ctl/manager" .)
(cd "$ROOT/tests/k8s/rbac_proxy_standin" && GO111MODULE=off CGO_ENABLED=0 "$GO" build -o "$work/proxy/kube-rbac-proxy" .)
printf 'FROM scratch\nCOPY manager /manager\nENTRYPOINT ["/manager"]\n' \
  >"$work/ctl/Dockerfile"
printf 'FROM scratch\nCOPY kube-rbac-proxy /usr/local/bin/kube-rbac-proxy\nUSER 65532\nENTRYPOINT ["/usr/local/bin/kube-rbac-proxy"]\n' \
  >"$work/proxy/Dockerfile"
podman build -q --pull=never -t localhost/example-controller:e2e "$work/ctl" >/dev/null
podman build -q --pull=never -t localhost/kube-rbac-proxy-standin:e2e "$work/proxy" >/dev/null
PROXY_IMAGE="$(grep -o 'quay.io/brancz/kube-rbac-proxy:v[0-9.]*' "$ROOT/helm/pprof-sidecar/values.yaml")"
IMAGE_MAP=(--image "example.com/controller:latest=localhost/example-controller:e2e"
           --image "$PROXY_IMAGE=localhost/kube-rbac-proxy-standin:e2e")

# run_pod NAME FILE: plays the pod, profiles through the proxy, checks the profile.
run_pod() {
  local name="$1" file="$2" pod="controller-manager-e2e"
  podman pod rm -f "$pod" >/dev/null 2>&1 || true
  PODS+=("$pod")
  if ! podman kube play "$file" >"$work/$name-play.log" 2>&1; then
    cat "$work/$name-play.log" >&2
    bad "[$name] podman kube play"
    return
  fi
  ok "[$name] podman kube play"
  if podman pod inspect "$pod" --format '{{.SharedNamespaces}}' | grep -qw pid; then
    ok "[$name] pod shares the pid namespace"
  else
    bad "[$name] pod does not share the pid namespace: $(podman pod inspect "$pod" --format '{{.SharedNamespaces}}')"
  fi
  local infra pid
  infra="$(podman pod inspect "$pod" --format '{{.InfraContainerID}}')"
  pid="$(podman inspect "$infra" --format '{{.State.Pid}}')"
  local i
  for i in $(seq 1 50); do
    podman logs "$pod-pprof-sidecar" 2>&1 | grep -q 'serving http' && break
    sleep 0.2
  done
  podman logs "$pod-pprof-sidecar" >"$work/$name-agent.log" 2>&1 || true
  if ! grep -q 'serving http://127.0.0.1:6060' "$work/$name-agent.log"; then
    sed 's/^/    agent: /' "$work/$name-agent.log" >&2
    bad "[$name] agent did not start"
    return
  fi
  ok "[$name] agent serves on 127.0.0.1:6060 only"
  incurl() { nsenter -t "$pid" -n curl -sk --max-time 30 "$@"; }
  local code
  code="$(incurl -o /dev/null -w '%{http_code}' https://127.0.0.1:8443/debug/pprof/)"
  [ "$code" = 401 ] && ok "[$name] proxy refuses requests without a token" || bad "[$name] no-token status $code"
  code="$(incurl -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer e2e' https://127.0.0.1:8443/metrics)"
  [ "$code" = 404 ] && ok "[$name] proxy only allows /debug/pprof" || bad "[$name] /metrics status $code"
  code="$(incurl -o "$work/$name.pb.gz" -w '%{http_code}' -H 'Authorization: Bearer e2e' \
    'https://127.0.0.1:8443/debug/pprof/profile?seconds=5')"
  if [ "$code" != 200 ]; then
    bad "[$name] profile HTTP $code: $(head -c 300 "$work/$name.pb.gz" 2>/dev/null)"
    podman logs "$pod-pprof-sidecar" 2>&1 | tail -5 >&2
    return
  fi
  "$GO" tool pprof -symbolize=none -top -unit=ms -nodecount=30 "$work/$name.pb.gz" >"$work/$name.top" 2>&1 || true
  sed 's/^/    /' "$work/$name.top" | sed -n 1,20p >&2
  # cum of hotPath vs coldPath: the target does 3 units of work in hotPath per unit in coldPath.
  local hot cold
  hot="$(awk '$6 == "main.hotPath" {sub("ms", "", $4); print $4}' "$work/$name.top")"
  cold="$(awk '$6 == "main.coldPath" {sub("ms", "", $4); print $4}' "$work/$name.top")"
  if [ -n "$hot" ] && [ -n "$cold" ]; then
    ok "[$name] profile names main.hotPath (${hot} ms) and main.coldPath (${cold} ms)"
    if awk -v h="$hot" -v c="$cold" 'BEGIN { r = h / (h + c); exit !(r > 0.6 && r < 0.9) }'; then
      ok "[$name] hotPath:coldPath proportion is about 3:1"
    else
      bad "[$name] hotPath share $hot/($hot+$cold) is not about 75%"
    fi
  else
    bad "[$name] profile does not name the target's functions"
  fi
  podman pod rm -f "$pod" >/dev/null 2>&1 || true
}

# --- 1. helm chart + webhook -----------------------------------------------------------------
NS=pprof-system
"$TOOLS/bin/helm" template e2e "$ROOT/helm/pprof-sidecar" -n "$NS" \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" >"$work/chart.yaml"
mkdir -p "$work/tls"
node --input-type=module -e '
  import { createRequire } from "node:module";
  import { readFileSync, writeFileSync } from "node:fs";
  const require = createRequire(process.env.K8S_TOOLS + "/package.json");
  const docs = require("js-yaml").loadAll(readFileSync(process.argv[1], "utf8")).filter(Boolean);
  const s = docs.find((d) => d.kind === "Secret");
  for (const k of ["tls.crt", "tls.key", "ca.crt"]) {
    writeFileSync(process.argv[2] + "/" + k, Buffer.from(s.data[k], "base64"));
  }
  const d = docs.find((d) => d.kind === "Deployment");
  const c = d.spec.template.spec.containers[0];
  writeFileSync(process.argv[2] + "/args", [...c.command, ...c.args].join("\n") + "\n");
  const svc = docs.find((d) => d.kind === "Service");
  writeFileSync(process.argv[2] + "/svc", `${svc.metadata.name}.${svc.metadata.namespace}.svc`);' \
  "$work/chart.yaml" "$work/tls"
chmod 0644 "$work/tls/"*  # read by the webhook's non-root user, as a Secret volume would be
SVC="$(cat "$work/tls/svc")"
PORT=$((20000 + RANDOM % 20000))
mapfile -t wargs < <(sed "s/^--listen_address=.*/--listen_address=127.0.0.1:$PORT/" "$work/tls/args")
podman rm -f "$WEBHOOK_CTR" >/dev/null 2>&1 || true
podman run -d --name "$WEBHOOK_CTR" --network host --user 65532:65532 --read-only \
  --cap-drop ALL -v "$work/tls:/tls:ro" --entrypoint "${wargs[0]}" "$IMAGE" "${wargs[@]:1}" >/dev/null
for i in $(seq 1 50); do
  curl -s --cacert "$work/tls/ca.crt" --resolve "$SVC:$PORT:127.0.0.1" "https://$SVC:$PORT/healthz" \
    >/dev/null 2>&1 && break
  sleep 0.2
done
if curl -sf --cacert "$work/tls/ca.crt" --resolve "$SVC:$PORT:127.0.0.1" "https://$SVC:$PORT/healthz" >/dev/null; then
  ok "[webhook] serves /healthz with the chart's certificate for $SVC"
else
  podman logs "$WEBHOOK_CTR" >&2 || true
  die "webhook from the image did not come up"
fi
code="$(curl -s -o /dev/null -w '%{http_code}' --cacert "$work/tls/ca.crt" --resolve "$SVC:$PORT:127.0.0.1" \
  -X POST -H 'Content-Type: application/json' --data '{"garbage":' "https://$SVC:$PORT/mutate")"
[ "$code" = 400 ] && ok "[webhook] bad request -> HTTP 400" || bad "[webhook] bad request -> $code"

if node "$ROOT/tests/k8s/admit_pod.mjs" --manifest "$ROOT/deploy/kustomize/example-controller.yaml" \
    --deployment controller-manager --webhook "https://127.0.0.1:$PORT/mutate" \
    --ca "$work/tls/ca.crt" --servername "$SVC" --annotate pprof-sidecar.io/inject=true \
    --annotate pprof-sidecar.io/target-container=manager "${IMAGE_MAP[@]}" \
    --response-out "$work/webhook-response.json" --out "$work/pod-webhook.yaml"; then
  ok "[webhook] AdmissionReview over TLS -> JSONPatch applied"
  run_pod webhook "$work/pod-webhook.yaml"
else
  bad "[webhook] admission"
fi

# --- 2. kustomize patch ------------------------------------------------------------------------
"$TOOLS/bin/kubectl" kustomize "$ROOT/deploy/kustomize" >"$work/kustomize.yaml"
AGENT_IMAGE_IN_PATCH="$(grep -o 'ghcr.io/pprof-sidecar/pprof-sidecar:[^ ]*' "$ROOT/deploy/kustomize/pprof-sidecar-patch.yaml" | sed -n 1p)"
if node "$ROOT/tests/k8s/admit_pod.mjs" --manifest "$work/kustomize.yaml" --deployment controller-manager \
    --no-webhook "${IMAGE_MAP[@]}" --image "$AGENT_IMAGE_IN_PATCH=$IMAGE" --out "$work/pod-kustomize.yaml"; then
  run_pod kustomize "$work/pod-kustomize.yaml"
else
  bad "[kustomize] render"
fi

# --- 3. no restart: the agent joins a running pod like an ephemeral container ---------------
# The example controller pod without sidecar and without shareProcessNamespace; the agent joins
# the pod's network namespace and the manager container's pid namespace (what
# `kubectl debug --target=manager` does), with the securityContext of deploy/ephemeral/agent-custom.json.
if node "$ROOT/tests/k8s/admit_pod.mjs" --manifest "$ROOT/deploy/kustomize/example-controller.yaml" \
    --deployment controller-manager --no-webhook "${IMAGE_MAP[@]}" --out "$work/pod-plain.yaml" &&
   podman pod rm -f controller-manager-e2e >/dev/null 2>&1; podman kube play "$work/pod-plain.yaml" \
    >"$work/plain-play.log" 2>&1; then
  PODS+=(controller-manager-e2e)
  tgt=controller-manager-e2e-manager
  # In the pod (its network, like an ephemeral container) and in the manager's pid namespace.
  podman run -d --name pprof-e2e-ephemeral --pod controller-manager-e2e --pid "container:$tgt" \
    --user 0 --cap-drop ALL --cap-add BPF,PERFMON,SYS_PTRACE --read-only \
    --security-opt no-new-privileges "$IMAGE" --listen_address=127.0.0.1:6060 >/dev/null ||
    bad "[ephemeral] podman run of the agent"
  for i in $(seq 1 50); do
    podman logs pprof-e2e-ephemeral 2>&1 | grep -q 'serving http' && break
    sleep 0.2
  done
  pid="$(podman inspect "$tgt" --format '{{.State.Pid}}')"
  if nsenter -t "$pid" -n curl -s --max-time 30 -o "$work/ephemeral.pb.gz" \
      'http://127.0.0.1:6060/debug/pprof/profile?seconds=5' &&
     "$GO" tool pprof -symbolize=none -top "$work/ephemeral.pb.gz" 2>/dev/null | grep -q main.hotPath; then
    ok "[ephemeral] agent joined the running pod's manager pid namespace; profile names main.hotPath"
  else
    bad "[ephemeral] no profile of the running pod"
    podman logs pprof-e2e-ephemeral 2>&1 | tail -5 >&2
  fi
  podman rm -f pprof-e2e-ephemeral >/dev/null 2>&1 || true
  podman pod rm -f controller-manager-e2e >/dev/null 2>&1 || true
else
  cat "$work/plain-play.log" >&2 || true
  bad "[ephemeral] play the plain pod"
fi

# --- 4. OOM: the leaking controller is OOM-killed and restarted; its heap is served afterwards ---
# The kustomize-rendered pod (the agent with --snapshot_dir on its emptyDir and the manager's
# limit from the downward API) whose manager is tests/targets/oom_go_leak: it leaks in
# main.leakCacheEntry at OOM_RATE MiB/s under the example's 128Mi limit until the kernel kills it;
# restartPolicy Always, so podman starts it again. Then, through the proxy: the snapshot list
# names heap snapshots of the killed pid at increasing thresholds, and each one's top
# inuse_space function (go tool pprof) is main.leakCacheEntry.
OOM_RATE=8
OOM_LIMIT=134217728
oom_pod() {
  local name=oom pod=controller-manager-e2e t0=$SECONDS
  mkdir -p "$work/leak"
  (cd "$ROOT/tests/targets/oom_go_leak" && GO111MODULE=off CGO_ENABLED=0 "$GO" build -o "$work/leak/manager" .)
  printf 'FROM scratch\nCOPY manager /manager\nENTRYPOINT ["/manager"]\n' \
    >"$work/leak/Dockerfile"
  podman build -q --pull=never -t localhost/example-controller-leak:e2e "$work/leak" >/dev/null
  if ! node "$ROOT/tests/k8s/admit_pod.mjs" --manifest "$work/kustomize.yaml" \
      --deployment controller-manager --no-webhook \
      --image "example.com/controller:latest=localhost/example-controller-leak:e2e" "${IMAGE_MAP[@]}" \
      --image "$AGENT_IMAGE_IN_PATCH=$IMAGE" --out "$work/pod-oom.yaml" 2>/dev/null ||
     ! K8S_TOOLS="$TOOLS" node --input-type=module -e '
      import { createRequire } from "node:module";
      import { readFileSync, writeFileSync } from "node:fs";
      const yaml = createRequire(process.env.K8S_TOOLS + "/package.json")("js-yaml");
      const [file, rate, limit] = process.argv.slice(1);
      const pod = yaml.load(readFileSync(file, "utf8"));
      const m = pod.spec.containers.find((c) => c.name === "manager");
      const a = pod.spec.containers.find((c) => c.name === "pprof-sidecar");
      if (m.resources.limits.memory !== "128Mi") throw new Error(`manager limit ${m.resources.limits.memory}`);
      if (!a.args.includes(`--target_memory_limit_bytes=${limit}`)) throw new Error(`agent args ${a.args}`);
      m.args = [rate];
      pod.spec.restartPolicy = "Always";
      writeFileSync(file, yaml.dump(pod));' "$work/pod-oom.yaml" "$OOM_RATE" "$OOM_LIMIT"; then
    bad "[$name] render the leaking controller's pod"
    return
  fi
  podman pod rm -f "$pod" >/dev/null 2>&1 || true
  PODS+=("$pod")
  # From $work: conmon writes an empty "oom" file into its working directory at each OOM kill.
  if ! (cd "$work" && podman kube play "$work/pod-oom.yaml") >"$work/$name-play.log" 2>&1; then
    cat "$work/$name-play.log" >&2
    bad "[$name] podman kube play"
    return
  fi
  local ctr="$pod-manager" infra netpid killed nskilled i rc newpid
  infra="$(podman pod inspect "$pod" --format '{{.InfraContainerID}}')"
  netpid="$(podman inspect "$infra" --format '{{.State.Pid}}')"
  killed="$(podman inspect "$ctr" --format '{{.State.Pid}}')"
  nskilled="$(awk '/^NSpid:/ {print $NF}' "/proc/$killed/status" 2>/dev/null)"
  [ "$(podman inspect "$ctr" --format '{{.HostConfig.Memory}} {{.HostConfig.RestartPolicy.Name}}')" = "$OOM_LIMIT always" ] &&
    ok "[$name] manager runs under a $((OOM_LIMIT >> 20)) MiB limit, restart policy always" ||
    bad "[$name] manager's limit and restart policy: $(podman inspect "$ctr" --format '{{.HostConfig.Memory}} {{.HostConfig.RestartPolicy.Name}}')"
  # The kill and the restart: a new pid and restart count 1 (within 60 s; ~16 s at 8 MiB/s).
  for i in $(seq 1 300); do
    read -r rc newpid < <(podman inspect "$ctr" --format '{{.RestartCount}} {{.State.Pid}}' || echo 0 0)
    [ "$rc" -ge 1 ] && [ "$newpid" -gt 0 ] && [ "$newpid" != "$killed" ] && break
    sleep 0.2
  done
  if [ "$rc" -ge 1 ] && [ "$newpid" != "$killed" ]; then
    ok "[$name] podman restarted the manager $((SECONDS - t0)) s after play (restart count $rc, pid $killed -> $newpid)"
  else
    bad "[$name] the manager was not restarted (restart count $rc, pid $newpid)"
    return
  fi
  if dmesg | grep -q "Killed process $killed (manager)"; then
    ok "[$name] the kernel OOM-killed pid $killed (pid $nskilled in the pod) at its cgroup limit"
  else
    bad "[$name] no OOM kill of pid $killed in the kernel log"
  fi
  podman logs "$pod-pprof-sidecar" >"$work/$name-agent.log" 2>&1 || true
  local src
  src="$(grep -o "snapshot [0-9]*pct of pid $nskilled at .*" "$work/$name-agent.log" | head -1 || true)"
  if grep -q "(.*, cgroup v1 " <<<"$src"; then
    ok "[$name] the recorder read the manager's limit from its cgroup: ${src#*limit }"
  else
    bad "[$name] the recorder did not read the manager's cgroup: ${src:-no snapshot logged}"
  fi
  ocurl() { nsenter -t "$netpid" -n curl -sk --max-time 30 -H 'Authorization: Bearer e2e' "$@"; }
  local code
  code="$(ocurl -o "$work/$name-list.json" -w '%{http_code}' \
    'https://127.0.0.1:8443/debug/pprof/snapshots/?format=json' || true)"
  if [ "$code" != 200 ]; then
    bad "[$name] snapshot list through the proxy: HTTP $code"
    return
  fi
  # The killed process's heap snapshots, oldest first: name reason limit_bytes.
  node -e '
    const j = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    for (const s of j.snapshots) {
      if (s.pid === Number(process.argv[2]) && s.kind === "heap") console.log(s.name, s.reason, s.limit_bytes);
    }' "$work/$name-list.json" "$nskilled" >"$work/$name-killed.txt" || true
  local reasons thresholds
  reasons="$(awk '{print $2}' "$work/$name-killed.txt" | paste -sd,)"
  thresholds="$(grep -o '^[0-9]*' <<<"$(awk '$2 ~ /pct$/ {print $2}' "$work/$name-killed.txt")" | paste -sd' ' || true)"
  if [ "$(wc -w <<<"$thresholds")" -ge 2 ] && [ "$(tr ' ' '\n' <<<"$thresholds" | sort -n | paste -sd' ')" = "$thresholds" ] &&
     awk -v l="$OOM_LIMIT" '$3 != l { exit 1 }' "$work/$name-killed.txt"; then
    ok "[$name] the proxy lists heap snapshots of the killed pid $nskilled: $reasons (limit $OOM_LIMIT)"
  else
    bad "[$name] snapshots of pid $nskilled: '${reasons}' (want increasing thresholds at limit $OOM_LIMIT)"
    sed 's/^/    /' "$work/$name-list.json" >&2
  fi
  local snap reason top got=0 tops=()
  while read -r snap reason _; do
    code="$(ocurl -o "$work/$snap.pb.gz" -w '%{http_code}' "https://127.0.0.1:8443/debug/pprof/snapshots/$snap" || true)"
    top="$("$GO" tool pprof -top -sample_index=inuse_space -nodecount=5 "$work/$snap.pb.gz" 2>/dev/null |
      awk 'f && NF >= 6 {print $6 " " $1; exit} /flat%/ {f = 1}' || true)"
    tops+=("$reason: ${top:-HTTP $code}")
    [ "$code" = 200 ] && [ "${top%% *}" = main.leakCacheEntry ] && got=$((got + 1))
  done <"$work/$name-killed.txt"
  if [ "$got" -gt 0 ] && [ "$got" -eq "$(wc -l <"$work/$name-killed.txt")" ]; then
    ok "[$name] each one downloaded through the proxy; top inuse_space: $(IFS=';'; echo "${tops[*]}")"
  else
    bad "[$name] top inuse_space of the killed pid's snapshots: $(IFS=';'; echo "${tops[*]}")"
  fi
  # The at-kill capture is best effort (read from the dying process, else the last heap read near
  # the limit): its outcome from the agent's own /metrics (in the pod; the proxy serves none).
  local atkill
  atkill="$(nsenter -t "$netpid" -n curl -s --max-time 10 http://127.0.0.1:6060/metrics |
    awk '/^pprof_sidecar_oom_kill_snapshots_total/ && $2 > 0 {printf "%s ", $1}' || true)"
  log "     [$name] at-kill snapshot: $(awk '$2 == "oom-kill" {f = 1} END {print f ? "listed" : "none"}' \
    "$work/$name-killed.txt"); agent counted: ${atkill:-no at-kill capture}"
  podman pod rm -f "$pod" >/dev/null 2>&1 || true
  log "     [$name] scenario wall time $((SECONDS - t0)) s"
}
oom_pod

echo "pod_e2e: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
