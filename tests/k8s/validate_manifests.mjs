// Validates every Kubernetes object in the given YAML files (multi-document) against the
// Kubernetes OpenAPI schemas shipped in the npm package kubernetes-models (and
// @kubernetes-models/cert-manager for cert-manager kinds). Exits 1 on the first file with an
// invalid or unknown object; prints one line per object.
// Usage: NODE_PATH=... node validate_manifests.mjs FILE...   (run from the tools dir, see
// tests/k8s/chart_test.sh, so that the packages resolve)
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const toolsDir = process.env.K8S_TOOLS;
if (!toolsDir) throw new Error("K8S_TOOLS must point at the scripts/k8s-tools.sh directory");
const require = createRequire(toolsDir + "/package.json");
const yaml = require("js-yaml");

async function modelFor(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const candidates = [];
  if (group.endsWith("cert-manager.io")) {
    candidates.push(`@kubernetes-models/cert-manager/${group}/${version}/${kind}`);
  } else {
    candidates.push(`kubernetes-models/${group ? group + "/" : ""}${version}/${kind}`);
  }
  for (const c of candidates) {
    const file = `${toolsDir}/node_modules/${c}.js`;
    if (!existsSync(file)) continue;
    const mod = await import(pathToFileURL(file).href);
    if (mod[kind]) return mod[kind];
  }
  return null;
}

let failures = 0;
let count = 0;
for (const file of process.argv.slice(2)) {
  const docs = yaml.loadAll(readFileSync(file, "utf8")).filter((d) => d != null);
  for (const obj of docs) {
    count++;
    const id = `${file}: ${obj.apiVersion}/${obj.kind} ${obj.metadata?.namespace ?? ""}/${obj.metadata?.name}`;
    if (!obj.apiVersion || !obj.kind || !obj.metadata?.name) {
      console.log(`INVALID ${id}: apiVersion, kind and metadata.name are required`);
      failures++;
      continue;
    }
    const Model = await modelFor(obj.apiVersion, obj.kind);
    if (!Model) {
      console.log(`UNKNOWN ${id}: no schema`);
      failures++;
      continue;
    }
    try {
      new Model(obj).validate();
      console.log(`ok      ${id}`);
    } catch (e) {
      console.log(`INVALID ${id}: ${e.message}`);
      failures++;
    }
  }
}
console.log(`validated ${count} objects, ${failures} invalid`);
process.exit(failures || count === 0 ? 1 : 0);
