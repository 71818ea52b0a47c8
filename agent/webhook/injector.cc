#include "agent/webhook/injector.h"

#include <nlohmann/json.hpp>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace pprof_sidecar {
namespace {

using json = nlohmann::json;

constexpr size_t kMaxTargetNameLength = 256;

// Serializes without throwing: invalid UTF-8 from the request is replaced, never fatal.
std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// RFC 6901 escaping of one JSON pointer reference token.
std::string PointerToken(absl::string_view s) {
  return absl::StrReplaceAll(s, {{"~", "~0"}, {"/", "~1"}});
}

// Returns obj[key] when obj is an object holding a string there, else nullptr.
const std::string* StringField(const json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_string()) return nullptr;
  return it->get_ptr<const std::string*>();
}

const json* Field(const json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

// Escapes regex metacharacters so the agent's --target_name matches `name` literally.
std::string RegexLiteral(absl::string_view name) {
  std::string out;
  for (char c : name) {
    if (std::string_view("\\^$.|?*+()[]{}").find(c) != std::string_view::npos) out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

// Wrappers whose basename says nothing about the real process.
bool IsWrapper(absl::string_view base) {
  for (absl::string_view w : {"sh", "bash", "dash", "ash", "zsh", "busybox", "env", "tini",
                              "dumb-init", "catatonit", "exec"}) {
    if (base == w) return true;
  }
  return false;
}

// The executable basename of container `c` when its command names it, else "".
std::string CommandBasename(const json& c) {
  const json* cmd = Field(c, "command");
  if (cmd == nullptr || !cmd->is_array() || cmd->empty() || !(*cmd)[0].is_string()) return "";
  std::string path = (*cmd)[0].get<std::string>();
  size_t slash = path.rfind('/');
  std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  if (base.empty() || IsWrapper(base) || base.size() > kMaxTargetNameLength) return "";
  return base;
}

bool DeclaresPort(const json& containers, int port) {
  if (!containers.is_array()) return false;
  for (const json& c : containers) {
    const json* ports = Field(c, "ports");
    if (ports == nullptr || !ports->is_array()) continue;
    for (const json& p : *ports) {
      const json* cp = Field(p, "containerPort");
      if (cp != nullptr && cp->is_number_integer() && cp->get<int64_t>() == port) return true;
    }
  }
  return false;
}

bool HasVolumeNamed(const json& spec, absl::string_view name) {
  const json* vols = Field(spec, "volumes");
  if (vols == nullptr || !vols->is_array()) return false;
  for (const json& v : *vols) {
    const std::string* n = StringField(v, "name");
    if (n != nullptr && *n == name) return true;
  }
  return false;
}

bool HasContainerNamed(const json& containers, absl::string_view name) {
  if (!containers.is_array()) return false;
  for (const json& c : containers) {
    const std::string* n = StringField(c, "name");
    if (n != nullptr && *n == name) return true;
  }
  return false;
}

// An exec probe: the agent listens on loopback only, out of the kubelet's reach, so the agent's
// binary asks it (`--probe`).
json AgentProbe(const InjectorConfig& cfg, const char* path, int period_seconds) {
  return {
      {"exec",
       {{"command", json::array({kAgentBinary, absl::StrCat("--probe=", path),
                                 absl::StrCat("--listen_address=127.0.0.1:", cfg.agent_port)})}}},
      {"initialDelaySeconds", 5},
      {"periodSeconds", period_seconds},
      {"timeoutSeconds", 5},
      {"failureThreshold", 3}};
}

constexpr char kSnapshotVolume[] = "pprof-sidecar-snapshots";
constexpr char kSnapshotDir[] = "/var/lib/pprof-sidecar/snapshots";
constexpr char kLimitEnv[] = "PPROF_SIDECAR_TARGET_MEMORY_LIMIT";

// `target_container`: the name of the target's container ("" if not known).
json AgentContainer(const InjectorConfig& cfg, const std::string& target_name,
                    const std::string& target_container) {
  json args = json::array({absl::StrCat("--listen_address=127.0.0.1:", cfg.agent_port),
                           absl::StrCat("--cpu_sampling_hz=", cfg.cpu_sampling_hz)});
  if (!target_name.empty()) args.push_back(absl::StrCat("--target_name=", target_name));
  json env = json::array();
  if (!cfg.snapshot_size_limit.empty()) {
    args.push_back(absl::StrCat("--snapshot_dir=", kSnapshotDir));
    if (!target_container.empty()) {
      // The kubelet expands $(VAR) in args from the container's env.
      args.push_back(absl::StrCat("--target_memory_limit_bytes=$(", kLimitEnv, ")"));
      env.push_back({{"name", kLimitEnv},
                     {"valueFrom",
                      {{"resourceFieldRef",
                        {{"containerName", target_container},
                         {"resource", "limits.memory"},
                         {"divisor", "1"}}}}}});
    }
  }
  json caps = json::array({"BPF", "PERFMON", "SYS_PTRACE"});
  if (cfg.kernel_symbols) caps.push_back("SYSLOG");
  if (cfg.sys_resource) caps.push_back("SYS_RESOURCE");
  if (cfg.native_heap) caps.push_back("SYS_ADMIN");
  json sc = {{"runAsUser", 0},
             {"runAsNonRoot", false},
             {"readOnlyRootFilesystem", true},
             {"capabilities", {{"add", caps}, {"drop", json::array({"ALL"})}}}};
  if (cfg.privileged) {
    sc["privileged"] = true;
  } else {
    sc["allowPrivilegeEscalation"] = false;
  }
  json c = {{"name", kAgentContainerName},
            {"image", cfg.agent_image},
            {"imagePullPolicy", cfg.agent_image_pull_policy},
            {"args", args},
            {"securityContext", sc},
            {"resources",
             {{"requests", {{"cpu", cfg.agent_cpu_request}, {"memory", cfg.agent_memory_request}}},
              {"limits", {{"memory", cfg.agent_memory_limit}}}}},
            {"livenessProbe", AgentProbe(cfg, "/livez", 30)},
            {"terminationMessagePolicy", "FallbackToLogsOnError"}};
  if (cfg.readiness_gate) c["readinessProbe"] = AgentProbe(cfg, "/healthz", 10);
  if (!env.empty()) c["env"] = env;
  if (!cfg.snapshot_size_limit.empty()) {
    c["volumeMounts"] =
        json::array({{{"name", kSnapshotVolume}, {"mountPath", kSnapshotDir}}});
  }
  return c;
}

json ProxyContainer(const InjectorConfig& cfg) {
  return {
      {"name", kProxyContainerName},
      {"image", cfg.proxy_image},
      {"imagePullPolicy", "IfNotPresent"},
      {"args",
       json::array({absl::StrCat("--secure-listen-address=0.0.0.0:", cfg.proxy_port),
                    absl::StrCat("--upstream=http://127.0.0.1:", cfg.agent_port, "/"),
                    // kube-rbac-proxy matches with Go's path.Match: '*' stops at '/'.
                    "--allow-paths=/debug/pprof,/debug/pprof/*,/debug/pprof/snapshots/*",
                    "--logtostderr=true", "--v=0"})},
      {"ports",
       json::array(
           {{{"name", "pprof-https"}, {"containerPort", cfg.proxy_port}, {"protocol", "TCP"}}})},
      {"securityContext",
       {{"runAsNonRoot", true},
        {"runAsUser", 65532},
        {"allowPrivilegeEscalation", false},
        {"readOnlyRootFilesystem", true},
        {"capabilities", {{"drop", json::array({"ALL"})}}}}},
      {"resources",
       {{"requests", {{"cpu", cfg.proxy_cpu_request}, {"memory", cfg.proxy_memory_request}}},
        {"limits", {{"memory", cfg.proxy_memory_limit}}}}},
      {"terminationMessagePolicy", "FallbackToLogsOnError"}};
}

// Patch ops for a parsed Pod, or an empty array when it is left alone.
absl::StatusOr<json> PatchFor(const json& pod, const InjectorConfig& cfg,
                              std::vector<std::string>* warnings) {
  if (!pod.is_object()) return absl::InvalidArgumentError("the object is not a JSON object");
  const json* meta = Field(pod, "metadata");
  const json* spec = Field(pod, "spec");
  if (meta == nullptr || !meta->is_object() || spec == nullptr || !spec->is_object()) {
    return absl::InvalidArgumentError("the object has no metadata/spec objects: not a Pod");
  }
  const json* containers = Field(*spec, "containers");
  if (containers == nullptr || !containers->is_array() || containers->empty()) {
    return absl::InvalidArgumentError("spec.containers is not a non-empty array: not a Pod");
  }
  const json* annotations = Field(*meta, "annotations");
  const std::string* inject =
      annotations != nullptr ? StringField(*annotations, kInjectAnnotation) : nullptr;
  if (inject == nullptr || *inject == "false") return json::array();
  if (*inject != "true") {
    warnings->push_back(absl::StrCat("pprof-sidecar: not injected: annotation ", kInjectAnnotation,
                                     " must be \"true\" or \"false\""));
    return json::array();
  }
  if (StringField(*annotations, kStatusAnnotation) != nullptr) return json::array();
  const json empty = json::array();
  const json* init = Field(*spec, "initContainers");
  if (init == nullptr) init = &empty;
  for (const char* name : {kAgentContainerName, kProxyContainerName}) {
    if (HasContainerNamed(*containers, name) || HasContainerNamed(*init, name)) {
      // Already carries the sidecar (e.g. patched by hand or with kustomize): leave it alone.
      return json::array();
    }
  }
  const json* host_pid = Field(*spec, "hostPID");
  if (host_pid != nullptr && host_pid->is_boolean() && host_pid->get<bool>()) {
    warnings->push_back(
        "pprof-sidecar: not injected: hostPID pods cannot use shareProcessNamespace");
    return json::array();
  }
  for (int port : {cfg.agent_port, cfg.proxy_port}) {
    if (DeclaresPort(*containers, port)) {
      warnings->push_back(
          absl::StrCat("pprof-sidecar: not injected: a container already uses port ", port,
                       " that the sidecar needs"));
      return json::array();
    }
  }

  // Which process to profile: explicit regex, else the target container's command.
  std::string target_name, target_container;
  if (containers->size() == 1) {
    if (const std::string* n = StringField((*containers)[0], "name")) target_container = *n;
  }
  if (const std::string* tn = StringField(*annotations, kTargetNameAnnotation)) {
    if (tn->empty() || tn->size() > kMaxTargetNameLength ||
        tn->find_first_of("\n\r") != std::string::npos) {
      warnings->push_back(absl::StrCat("pprof-sidecar: not injected: annotation ",
                                       kTargetNameAnnotation, " must be a one-line regex of 1..",
                                       kMaxTargetNameLength, " characters"));
      return json::array();
    }
    target_name = *tn;
  } else if (const std::string* tc = StringField(*annotations, kTargetContainerAnnotation)) {
    const json* found = nullptr;
    for (const json& c : *containers) {
      const std::string* n = StringField(c, "name");
      if (n != nullptr && *n == *tc) found = &c;
    }
    if (found == nullptr) {
      warnings->push_back(absl::StrCat("pprof-sidecar: not injected: annotation ",
                                       kTargetContainerAnnotation,
                                       " names no container of the pod"));
      return json::array();
    }
    target_container = *tc;
    std::string base = CommandBasename(*found);
    if (!base.empty()) target_name = RegexLiteral(base);
  } else if (containers->size() == 1) {
    std::string base = CommandBasename((*containers)[0]);
    if (!base.empty()) target_name = RegexLiteral(base);
  }

  json ops = json::array();
  ops.push_back({{"op", "add"}, {"path", "/spec/shareProcessNamespace"}, {"value", true}});
  ops.push_back({{"op", "add"},
                 {"path", "/spec/containers/-"},
                 {"value", AgentContainer(cfg, target_name, target_container)}});
  if (!cfg.snapshot_size_limit.empty()) {
    if (HasVolumeNamed(*spec, kSnapshotVolume)) {
      warnings->push_back(absl::StrCat("pprof-sidecar: not injected: the pod already has a volume "
                                       "named ", kSnapshotVolume));
      return json::array();
    }
    json vol = {{"name", kSnapshotVolume},
                {"emptyDir", {{"sizeLimit", cfg.snapshot_size_limit}}}};
    const json* vols = Field(*spec, "volumes");
    if (vols != nullptr && vols->is_array()) {
      ops.push_back({{"op", "add"}, {"path", "/spec/volumes/-"}, {"value", vol}});
    } else {
      ops.push_back({{"op", "add"}, {"path", "/spec/volumes"}, {"value", json::array({vol})}});
    }
  }
  ops.push_back({{"op", "add"}, {"path", "/spec/containers/-"}, {"value", ProxyContainer(cfg)}});
  ops.push_back({{"op", "add"},
                 {"path", absl::StrCat("/metadata/annotations/", PointerToken(kStatusAnnotation))},
                 {"value", "injected"}});
  return ops;
}

}  // namespace

absl::StatusOr<std::string> InjectionPatch(absl::string_view pod_json, const InjectorConfig& config,
                                           std::vector<std::string>* warnings) {
  json pod = json::parse(pod_json.begin(), pod_json.end(), nullptr, /*allow_exceptions=*/false);
  if (pod.is_discarded()) return absl::InvalidArgumentError("the pod is not valid JSON");
  absl::StatusOr<json> ops = PatchFor(pod, config, warnings);
  if (!ops.ok()) return ops.status();
  return ops->empty() ? std::string() : Dump(*ops);
}

absl::StatusOr<std::string> ReviewAdmission(absl::string_view body, const InjectorConfig& config) {
  json review = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (review.is_discarded()) return absl::InvalidArgumentError("body is not valid JSON");
  const std::string* kind = StringField(review, "kind");
  if (kind == nullptr || *kind != "AdmissionReview") {
    return absl::InvalidArgumentError("body is not an AdmissionReview (kind)");
  }
  const std::string* api = StringField(review, "apiVersion");
  if (api == nullptr || *api != "admission.k8s.io/v1") {
    return absl::InvalidArgumentError("only apiVersion admission.k8s.io/v1 is supported");
  }
  const json* request = Field(review, "request");
  const std::string* uid = request != nullptr ? StringField(*request, "uid") : nullptr;
  if (uid == nullptr || uid->empty()) {
    return absl::InvalidArgumentError("AdmissionReview has no request.uid");
  }

  json response = {{"uid", *uid}, {"allowed", true}};
  std::vector<std::string> warnings;
  const json* rkind = Field(*request, "kind");
  const std::string* kind_kind = rkind != nullptr ? StringField(*rkind, "kind") : nullptr;
  const std::string* op = StringField(*request, "operation");
  const std::string* sub = StringField(*request, "subResource");
  bool pod_create = kind_kind != nullptr && *kind_kind == "Pod" && op != nullptr &&
                    *op == "CREATE" && (sub == nullptr || sub->empty());
  if (pod_create) {
    const json* object = Field(*request, "object");
    absl::StatusOr<json> ops = object != nullptr
                                   ? PatchFor(*object, config, &warnings)
                                   : absl::InvalidArgumentError("request.object is missing");
    if (!ops.ok()) {
      response["allowed"] = false;
      response["status"] = {{"code", 400},
                            {"reason", "BadRequest"},
                            {"message", absl::StrCat("pprof-sidecar webhook: bad Pod in "
                                                     "AdmissionReview: ",
                                                     ops.status().message())}};
    } else if (!ops->empty()) {
      response["patchType"] = "JSONPatch";
      response["patch"] = absl::Base64Escape(Dump(*ops));
    }
  }
  if (!warnings.empty()) response["warnings"] = warnings;
  json out = {{"apiVersion", "admission.k8s.io/v1"},
              {"kind", "AdmissionReview"},
              {"response", std::move(response)}};
  return Dump(out);
}

}  // namespace pprof_sidecar
