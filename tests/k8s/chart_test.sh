#!/usr/bin/env bash
# Chart and manifest checks, no cluster needed: helm lint and helm template of helm/pprof-sidecar
# over the default and the main value combinations, every rendered object validated against the
# Kubernetes schemas (npm kubernetes-models), chart-generated TLS verified with openssl, schema
# rejections, and the kustomize patch / ephemeral container spec under deploy/ validated too.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

TOOLS="${PPROF_SIDECAR_K8S_TOOLS:-$ROOT/build-k8s-tools}"
bash "$ROOT/scripts/k8s-tools.sh" "$TOOLS" >/dev/null
HELM="$TOOLS/bin/helm"
KUBECTL="$TOOLS/bin/kubectl"
CHART="$ROOT/helm/pprof-sidecar"
out="$(mktemp -d "$K8S_WORK/chart.XXXXXX")"
trap 'rm -rf "$out"' EXIT
passed=0
failed=0
check() {  # check NAME CMD...: runs CMD, counts the result
  local name="$1"
  shift
  if "$@" >"$out/last.log" 2>&1; then
    passed=$((passed + 1))
    log "ok   $name"
  else
    failed=$((failed + 1))
    log "FAIL $name"
    sed 's/^/    /' "$out/last.log" | tail -30 >&2
  fi
}
validate() { K8S_TOOLS="$TOOLS" node "$ROOT/tests/k8s/validate_manifests.mjs" "$@"; }
py_get() {  # py_get FILE KIND EXPR: evaluates EXPR on the first object of KIND (as `o`)
  K8S_TOOLS="$TOOLS" node --input-type=module -e '
    import { createRequire } from "node:module";
    import { readFileSync } from "node:fs";
    const require = createRequire(process.env.K8S_TOOLS + "/package.json");
    const docs = require("js-yaml").loadAll(readFileSync(process.argv[1], "utf8")).filter(Boolean);
    const o = docs.find((d) => d.kind === process.argv[2]);
    if (!o) { console.error("no " + process.argv[2]); process.exit(1); }
    const v = eval(process.argv[3]);
    console.log(typeof v === "string" ? v : JSON.stringify(v));' "$@"
}

# name|helm --set arguments
combos=(
  "default|"
  "cert-manager|--set certificates.source=cert-manager"
  "privileged|--set agent.privileged=true --set agent.sysResource=true --set webhook.replicas=2"
  "rbac-bindings|--set rbacProxy.serviceAccounts[0].name=controller-manager --set rbacProxy.serviceAccounts[0].namespace=example-system --set reader.subjects[0].kind=Group --set reader.subjects[0].name=sre --set reader.subjects[0].apiGroup=rbac.authorization.k8s.io"
  "selectors|--set webhook.namespaceSelector.matchLabels.pprof-injection=enabled --set webhook.namespaceSelector.matchExpressions[0].key=tier --set webhook.namespaceSelector.matchExpressions[0].operator=NotIn --set webhook.namespaceSelector.matchExpressions[0].values[0]=infra --set webhook.objectSelector.matchLabels.app=demo"
  "overrides|--set fullnameOverride=prof --set image.repository=registry.local/pprof-sidecar --set image.tag=1.2.3 --set reader.create=false"
)

for combo in "${combos[@]}"; do
  name="${combo%%|*}"
  args="${combo#*|}"
  # shellcheck disable=SC2086
  check "helm lint [$name]" "$HELM" lint --strict "$CHART" $args
  # shellcheck disable=SC2086
  check "helm template [$name]" sh -c "'$HELM' template rel '$CHART' -n prof $args >'$out/$name.yaml'"
  check "kubernetes-models validate [$name]" validate "$out/$name.yaml"
done

# Semantics of the default rendering.
d="$out/default.yaml"
mw() { py_get "$1" MutatingWebhookConfiguration "o.webhooks[0].$2"; }
check "failurePolicy Ignore" test "$(mw "$d" failurePolicy)" = Ignore
check "sideEffects None" test "$(mw "$d" sideEffects)" = None
check "admissionReviewVersions [v1]" test "$(mw "$d" admissionReviewVersions)" = '["v1"]'
check "only pod CREATE" test "$(mw "$d" 'rules[0].operations')" = '["CREATE"]'
check "kube-system and release namespace excluded" sh -c \
  "echo '$(mw "$d" 'namespaceSelector.matchExpressions[0].values')' | grep -q '\"kube-system\".*\"prof\"'"
py_get "$d" Secret 'Buffer.from(o.data["ca.crt"], "base64").toString()' >"$out/ca.crt"
py_get "$d" Secret 'Buffer.from(o.data["tls.crt"], "base64").toString()' >"$out/tls.crt"
check "caBundle is the Secret's CA" test "$(mw "$d" 'clientConfig.caBundle')" = \
  "$(py_get "$d" Secret 'o.data["ca.crt"]')"
check "serving cert verifies for the Service DNS name" openssl verify -CAfile "$out/ca.crt" \
  -verify_hostname rel-pprof-sidecar-webhook.prof.svc "$out/tls.crt"
check "webhook args carry the agent image" sh -c \
  "'$HELM' template rel '$CHART' -n prof --set image.tag=9.9 | grep -q -- '--agent_image=ghcr.io/pprof-sidecar/pprof-sidecar:9.9'"
check "reader ClusterRole grants get on /debug/pprof/*" test \
  "$(py_get "$d" ClusterRole 'JSON.stringify(docs.filter(x=>x.kind==="ClusterRole").map(x=>x.rules))')" = \
  '[[{"apiGroups":["authentication.k8s.io"],"resources":["tokenreviews"],"verbs":["create"]},{"apiGroups":["authorization.k8s.io"],"resources":["subjectaccessreviews"],"verbs":["create"]}],[{"nonResourceURLs":["/debug/pprof","/debug/pprof/*"],"verbs":["get"]}]]'
check "privileged value reaches the webhook" sh -c "grep -q -- '--privileged=true' '$out/privileged.yaml'"
check "cert-manager: caBundle injected by cainjector" sh -c \
  "grep -q 'cert-manager.io/inject-ca-from: prof/rel-pprof-sidecar-webhook' '$out/cert-manager.yaml' && ! grep -q caBundle '$out/cert-manager.yaml'"
check "helm test pod present" sh -c "grep -q 'helm.sh/hook: test' '$d'"
check "NOTES show port-forward, create token, curl" sh -c \
  "'$HELM' install rel '$CHART' -n prof --dry-run=client 2>&1 | grep -q 'kubectl create token' && '$HELM' install rel '$CHART' -n prof --dry-run=client | grep -q 'port-forward'"

# The schema rejects bad values.
check "schema rejects unknown certificates.source" sh -c \
  "! '$HELM' template rel '$CHART' --set certificates.source=self >/dev/null 2>&1"
check "schema rejects unpinned proxy image" sh -c \
  "! '$HELM' template rel '$CHART' --set rbacProxy.image=quay.io/brancz/kube-rbac-proxy >/dev/null 2>&1"
check "schema rejects unknown values" sh -c "! '$HELM' template rel '$CHART' --set nope=1 >/dev/null 2>&1"

# The validator itself rejects invalid objects.
check "validator rejects invalid objects" sh -c \
  "! K8S_TOOLS='$TOOLS' node '$ROOT/tests/k8s/validate_manifests.mjs' '$ROOT/tests/k8s/testdata/invalid-objects.yaml'"

# deploy/: kustomize patch, snippet, ephemeral container spec.
check "kubectl kustomize deploy/kustomize" sh -c "'$KUBECTL' kustomize '$ROOT/deploy/kustomize' >'$out/kustomize.yaml'"
check "kubernetes-models validate [kustomize]" validate "$out/kustomize.yaml"
check "kustomize: shareProcessNamespace + agent + proxy" test \
  "$(py_get "$out/kustomize.yaml" Deployment '[o.spec.template.spec.shareProcessNamespace, o.spec.template.spec.containers.map(c=>c.name)]')" = \
  '[true,["pprof-sidecar","kube-rbac-proxy","manager"]]'
K8S_TOOLS="$TOOLS" node --input-type=module -e '
  import { createRequire } from "node:module";
  import { readFileSync, writeFileSync } from "node:fs";
  const require = createRequire(process.env.K8S_TOOLS + "/package.json");
  const y = require("js-yaml");
  const ec = y.load(readFileSync(process.argv[1], "utf8"));
  const pod = { apiVersion: "v1", kind: "Pod", metadata: { name: "p" },
    spec: { containers: [{ name: "manager", image: "m" }], ephemeralContainers: [ec] } };
  const snip = y.load(readFileSync(process.argv[2], "utf8"));
  const dep = { apiVersion: "apps/v1", kind: "Deployment", metadata: { name: "d" },
    spec: { selector: { matchLabels: { a: "b" } }, template: { metadata: { labels: { a: "b" } }, spec: snip.spec.template.spec } } };
  writeFileSync(process.argv[3], y.dump(pod) + "---\n" + y.dump(dep));' \
  "$ROOT/deploy/ephemeral/pprof-sidecar-ephemeral.yaml" "$ROOT/deploy/manifests/pod-spec-snippet.yaml" "$out/wrapped.yaml"
check "kubernetes-models validate [ephemeral container, snippet]" validate "$out/wrapped.yaml"

echo "chart_test: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
