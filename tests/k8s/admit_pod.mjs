// Turns the Deployment in a rendered manifest into the Pod the ReplicaSet controller would
// create, sends it to a running pprof-sidecar webhook as a real AdmissionReview v1 over TLS
// (verifying the serving certificate against the CA for the Service's DNS name), applies the
// returned JSONPatch (RFC 6902) and writes the mutated Pod as YAML for `podman kube play`.
// With --no-webhook the Pod is written as is (for the kustomize-patched Deployment).
// Then, as the kubelet does before starting containers and podman 4.3 does not: env values from
// resourceFieldRef (the downward API) are resolved for the named container (podman reads the
// container's own limit whatever containerName says) and $(VAR) in command and args is expanded
// from the container's env (podman passes it literally).
//
// Usage: K8S_TOOLS=dir node admit_pod.mjs --manifest F --deployment NAME --out F
//          [--webhook https://HOST:PORT/mutate --ca F --servername DNS] [--annotate k=v]...
//          [--image from=to]... [--pod-name NAME] [--response-out F]
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import https from "node:https";
import os from "node:os";
import { randomUUID } from "node:crypto";

const require = createRequire(process.env.K8S_TOOLS + "/package.json");
const yaml = require("js-yaml");
const jsonpatch = require("fast-json-patch");

const args = { annotate: [], image: [] };
for (let i = 2; i < process.argv.length; i += 2) {
  const k = process.argv[i].replace(/^--/, "");
  const v = process.argv[i + 1];
  if (k === "no-webhook") { args[k] = true; i--; continue; }
  if (Array.isArray(args[k])) args[k].push(v); else args[k] = v;
}

function post(url, body, ca, servername) {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = https.request({
      host: u.hostname, port: u.port, path: u.pathname, method: "POST", ca, servername,
      headers: { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) },
    }, (res) => {
      let data = "";
      res.on("data", (c) => (data += c));
      res.on("end", () => resolve({ status: res.statusCode, body: data }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

const docs = yaml.loadAll(readFileSync(args.manifest, "utf8")).filter(Boolean);
const dep = docs.find((d) => d.kind === "Deployment" && d.metadata.name === args.deployment);
if (!dep) throw new Error(`no Deployment ${args.deployment} in ${args.manifest}`);
const ns = dep.metadata.namespace || "default";
const tmpl = dep.spec.template;
let pod = {
  apiVersion: "v1",
  kind: "Pod",
  metadata: {
    generateName: `${dep.metadata.name}-7c9f8d6b5-`,
    namespace: ns,
    labels: { ...(tmpl.metadata?.labels || {}), "pod-template-hash": "7c9f8d6b5" },
    annotations: { ...(tmpl.metadata?.annotations || {}) },
  },
  spec: structuredClone(tmpl.spec),
};
for (const a of args.annotate) {
  const eq = a.indexOf("=");
  pod.metadata.annotations[a.slice(0, eq)] = a.slice(eq + 1);
}

if (args.webhook) {
  const uid = randomUUID();
  const review = {
    apiVersion: "admission.k8s.io/v1", kind: "AdmissionReview",
    request: {
      uid, kind: { group: "", version: "v1", kind: "Pod" },
      resource: { group: "", version: "v1", resource: "pods" },
      requestKind: { group: "", version: "v1", kind: "Pod" },
      requestResource: { group: "", version: "v1", resource: "pods" },
      namespace: ns, operation: "CREATE",
      userInfo: { username: "system:serviceaccount:kube-system:replicaset-controller" },
      object: pod, oldObject: null, dryRun: false,
      options: { apiVersion: "meta.k8s.io/v1", kind: "CreateOptions" },
    },
  };
  const res = await post(args.webhook, JSON.stringify(review), readFileSync(args.ca), args.servername);
  if (args["response-out"]) writeFileSync(args["response-out"], res.body);
  if (res.status !== 200) throw new Error(`webhook HTTP ${res.status}: ${res.body}`);
  const out = JSON.parse(res.body);
  if (out.response?.uid !== uid) throw new Error(`response uid mismatch: ${res.body}`);
  if (!out.response.allowed) throw new Error(`not allowed: ${res.body}`);
  if (out.response.patchType !== "JSONPatch" || !out.response.patch) {
    throw new Error(`no JSONPatch in response: ${res.body}`);
  }
  const ops = JSON.parse(Buffer.from(out.response.patch, "base64").toString());
  const errors = jsonpatch.validate(ops, pod);
  if (errors) throw new Error(`patch does not apply: ${errors}`);
  pod = jsonpatch.applyPatch(pod, ops, true, false).newDocument;
  console.error(`admit_pod: webhook returned ${ops.length} patch ops`);
}

// A Kubernetes quantity ("128Mi", "1G", "500m", "1e3") as a number.
function quantity(q) {
  const m = /^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$/.exec(String(q));
  if (!m) throw new Error(`bad quantity "${q}"`);
  const bin = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60 };
  const dec = { m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18 };
  return Number(m[1]) * (bin[m[2]] ?? dec[m[2]] ?? 1);
}

// The kubelet's part: resourceFieldRef env values resolved (ceil(value / divisor); an unset
// limit is the node's memory or CPUs), then $(VAR) expanded in command and args ("$$" is "$",
// an undefined VAR stays as written).
function kubeletEnv(spec) {
  const all = [...spec.containers, ...(spec.initContainers || [])];
  for (const c of all) {
    const vars = new Map();
    for (const e of c.env || []) {
      const ref = e.valueFrom?.resourceFieldRef;
      if (ref) {
        const src = all.find((o) => o.name === (ref.containerName || c.name));
        if (!src) throw new Error(`resourceFieldRef names no container "${ref.containerName}"`);
        const [kind, res] = ref.resource.split(".");
        const set = src.resources?.[kind]?.[res];
        const node = res === "memory" ? os.totalmem() : os.cpus().length;
        const v = set !== undefined ? quantity(set) : node;
        e.value = String(Math.ceil(v / quantity(ref.divisor ?? "1")));
        delete e.valueFrom;
      }
      if (e.value !== undefined) vars.set(e.name, e.value);
    }
    const expand = (a) => a.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g,
      (m, name) => (m === "$$" ? "$" : vars.has(name) ? vars.get(name) : m));
    if (c.command) c.command = c.command.map(expand);
    if (c.args) c.args = c.args.map(expand);
  }
}
kubeletEnv(pod.spec);

// podman kube play needs a concrete name; the API server would derive it from generateName.
pod.metadata.name = args["pod-name"] || `${dep.metadata.name}-e2e`;
delete pod.metadata.generateName;
for (const m of args.image) {
  const [from, to] = m.split("=");
  for (const c of [...pod.spec.containers, ...(pod.spec.initContainers || [])]) {
    if (c.image === from) c.image = to;
  }
}
writeFileSync(args.out, yaml.dump(pod));
console.error(`admit_pod: wrote ${args.out}: containers ${pod.spec.containers.map((c) => c.name)}, shareProcessNamespace=${pod.spec.shareProcessNamespace}`);
