// Sends real AdmissionReview v1 requests over TLS (self-signed certificate made with openssl) to a
// running WebhookServer and applies the returned JSONPatch to the pod to check the result.
#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/webhook/injector.h"
#include "agent/webhook/webhook_server.h"
#include "tests/testutil/testutil.h"

namespace pprof_sidecar {
namespace {

using json = nlohmann::json;
using ::pprof_sidecar::testing::MakeTempDir;
using ::pprof_sidecar::testing::RunCommand;

// Writes a self-signed certificate for localhost/127.0.0.1 to dir/<name>.{crt,key}.
void MakeCert(const std::string& dir, const std::string& name, const std::string& cn) {
  auto r =
      RunCommand(absl::StrCat("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=", cn,
                              " -addext ", "subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout ",
                              dir, "/", name, ".key -out ", dir, "/", name, ".crt 2>&1"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
}

// A pod as the ReplicaSet controller submits it for a kubebuilder-style Deployment.
json ControllerPod() {
  return json::parse(R"({
    "metadata": {
      "generateName": "controller-manager-6d4f8b7c9-",
      "namespace": "system",
      "labels": {"control-plane": "controller-manager"},
      "annotations": {"pprof-sidecar.io/inject": "true", "kubectl.kubernetes.io/default-container": "manager"}
    },
    "spec": {
      "serviceAccountName": "controller-manager",
      "securityContext": {"runAsNonRoot": true},
      "containers": [{
        "name": "manager",
        "image": "controller:latest",
        "command": ["/manager"],
        "args": ["--leader-elect", "--health-probe-bind-address=:8081"],
        "ports": [{"containerPort": 9443, "name": "webhook-server", "protocol": "TCP"}],
        "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}
      }]
    }
  })");
}

json Review(const json& pod, const std::string& uid, const std::string& op = "CREATE") {
  return {{"apiVersion", "admission.k8s.io/v1"},
          {"kind", "AdmissionReview"},
          {"request",
           {{"uid", uid},
            {"kind", {{"group", ""}, {"version", "v1"}, {"kind", "Pod"}}},
            {"resource", {{"group", ""}, {"version", "v1"}, {"resource", "pods"}}},
            {"requestKind", {{"group", ""}, {"version", "v1"}, {"kind", "Pod"}}},
            {"namespace", "system"},
            {"operation", op},
            {"userInfo", {{"username", "system:serviceaccount:kube-system:replicaset-controller"}}},
            {"object", pod},
            {"oldObject", nullptr},
            {"dryRun", false}}}};
}

const json* FindContainer(const json& pod, const std::string& name) {
  for (const json& c : pod["spec"]["containers"]) {
    if (c.value("name", "") == name) return &c;
  }
  return nullptr;
}

bool HasArg(const json& c, const std::string& arg) {
  for (const json& a : c["args"]) {
    if (a == arg) return true;
  }
  return false;
}

class WebhookTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir("webhook_test");
    MakeCert(dir_, "a", "webhook-a");
    StartServer(InjectorConfig{});
  }
  void TearDown() override { StopServer(); }

  void StartServer(const InjectorConfig& cfg) {
    auto s = WebhookServer::Create(dir_ + "/a.crt", dir_ + "/a.key", cfg);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
    ASSERT_TRUE(server_->Bind("127.0.0.1", 0).ok());
    thread_ = std::thread([this] { (void)server_->Serve(); });
    for (int i = 0; i < 500 && !server_->is_running(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_TRUE(server_->is_running());
  }
  void StopServer() {
    if (server_) server_->Stop();
    if (thread_.joinable()) thread_.join();
    server_.reset();
  }

  // POSTs `body` to /mutate, verifying the server certificate against `ca`.
  httplib::Result Post(const std::string& body, const std::string& ca = "a") {
    httplib::SSLClient cli("localhost", server_->port());
    cli.set_ca_cert_path((dir_ + "/" + ca + ".crt").c_str());
    cli.enable_server_certificate_verification(true);
    cli.set_connection_timeout(5);
    cli.set_read_timeout(5);
    return cli.Post("/mutate", body, "application/json");
  }

  // Sends the pod for review; returns the response and the pod with the patch applied.
  struct Outcome {
    json response;
    json pod;
    bool patched = false;
  };
  Outcome Admit(const json& pod, const std::string& op = "CREATE") {
    Outcome o;
    std::string uid = absl::StrCat("uid-", ++uid_counter_);
    auto res = Post(Review(pod, uid, op).dump());
    EXPECT_TRUE(res) << "no HTTP response: " << httplib::to_string(res.error());
    if (!res) return o;
    EXPECT_EQ(res->status, 200) << res->body;
    json review = json::parse(res->body);
    EXPECT_EQ(review["apiVersion"], "admission.k8s.io/v1");
    EXPECT_EQ(review["kind"], "AdmissionReview");
    o.response = review["response"];
    EXPECT_EQ(o.response["uid"], uid);
    o.pod = pod;
    if (o.response.contains("patch")) {
      EXPECT_EQ(o.response["patchType"], "JSONPatch");
      std::string patch;
      EXPECT_TRUE(absl::Base64Unescape(o.response["patch"].get<std::string>(), &patch));
      o.pod = pod.patch(json::parse(patch));  // RFC 6902, as the API server applies it
      o.patched = true;
    }
    return o;
  }

  std::string dir_;
  std::unique_ptr<WebhookServer> server_;
  std::thread thread_;
  int uid_counter_ = 0;
};

TEST_F(WebhookTest, InjectsAgentAndProxyIntoOptedInPod) {
  json pod = ControllerPod();
  Outcome o = Admit(pod);
  ASSERT_TRUE(o.patched) << o.response.dump();
  EXPECT_TRUE(o.response["allowed"].get<bool>());
  const json& spec = o.pod["spec"];
  EXPECT_EQ(spec["shareProcessNamespace"], true);
  ASSERT_EQ(spec["containers"].size(), 3u);
  EXPECT_EQ(spec["containers"][0], pod["spec"]["containers"][0]) << "app container changed";
  EXPECT_EQ(o.pod["metadata"]["annotations"]["pprof-sidecar.io/status"], "injected");
  EXPECT_EQ(o.pod["metadata"]["annotations"]["pprof-sidecar.io/inject"], "true");

  const json* agent = FindContainer(o.pod, "pprof-sidecar");
  ASSERT_NE(agent, nullptr);
  EXPECT_EQ((*agent)["image"], InjectorConfig{}.agent_image);
  EXPECT_TRUE(HasArg(*agent, "--listen_address=127.0.0.1:6060")) << agent->dump();
  EXPECT_TRUE(HasArg(*agent, "--target_name=manager")) << agent->dump();
  EXPECT_FALSE(agent->contains("ports")) << "the agent must not expose a port";
  const json& sc = (*agent)["securityContext"];
  EXPECT_EQ(sc["capabilities"]["add"], json::array({"BPF", "PERFMON", "SYS_PTRACE", "SYSLOG"}));
  EXPECT_EQ(sc["capabilities"]["drop"], json::array({"ALL"}));
  EXPECT_EQ(sc["readOnlyRootFilesystem"], true);
  // Liveness through the agent's own binary (it listens on loopback only); no readiness gate on
  // the app's pod by default.
  EXPECT_EQ((*agent)["livenessProbe"]["exec"]["command"],
            json::array({"/usr/local/bin/pprof-sidecar", "--probe=/livez",
                         "--listen_address=127.0.0.1:6060"}));
  EXPECT_FALSE(agent->contains("readinessProbe"));
  EXPECT_EQ(sc["runAsUser"], 0);
  EXPECT_EQ(sc["allowPrivilegeEscalation"], false);
  EXPECT_FALSE(sc.contains("privileged"));

  const json* proxy = FindContainer(o.pod, "kube-rbac-proxy");
  ASSERT_NE(proxy, nullptr);
  std::string image = (*proxy)["image"];
  EXPECT_TRUE(absl::StartsWith(image, "quay.io/brancz/kube-rbac-proxy:v")) << image;
  EXPECT_TRUE(HasArg(*proxy, "--secure-listen-address=0.0.0.0:8443"));
  EXPECT_TRUE(HasArg(*proxy, "--upstream=http://127.0.0.1:6060/"));
  EXPECT_TRUE(HasArg(*proxy, "--allow-paths=/debug/pprof,/debug/pprof/*,/debug/pprof/snapshots/*"));
  ASSERT_EQ((*proxy)["ports"].size(), 1u);
  EXPECT_EQ((*proxy)["ports"][0]["containerPort"], 8443);
  EXPECT_EQ((*proxy)["securityContext"]["runAsNonRoot"], true);
  EXPECT_EQ((*proxy)["securityContext"]["capabilities"]["drop"], json::array({"ALL"}));
}

// The OOM flight recorder: an emptyDir for the snapshots (added to existing volumes or as the
// first), and the target container's memory limit through the downward API.
TEST_F(WebhookTest, SnapshotVolumeAndTheTargetsMemoryLimit) {
  json pod = ControllerPod();
  Outcome o = Admit(pod);
  ASSERT_TRUE(o.patched) << o.response.dump();
  const json* agent = FindContainer(o.pod, "pprof-sidecar");
  ASSERT_NE(agent, nullptr);
  EXPECT_TRUE(HasArg(*agent, "--snapshot_dir=/var/lib/pprof-sidecar/snapshots")) << agent->dump();
  EXPECT_TRUE(HasArg(*agent, "--target_memory_limit_bytes=$(PPROF_SIDECAR_TARGET_MEMORY_LIMIT)"));
  const std::string target = pod["spec"]["containers"][0]["name"];
  EXPECT_EQ((*agent)["env"][0]["name"], "PPROF_SIDECAR_TARGET_MEMORY_LIMIT");
  EXPECT_EQ((*agent)["env"][0]["valueFrom"]["resourceFieldRef"],
            json({{"containerName", target}, {"resource", "limits.memory"}, {"divisor", "1"}}));
  EXPECT_EQ((*agent)["volumeMounts"][0],
            json({{"name", "pprof-sidecar-snapshots"},
                  {"mountPath", "/var/lib/pprof-sidecar/snapshots"}}));
  ASSERT_EQ(o.pod["spec"]["volumes"].size(), 1u);
  EXPECT_EQ(o.pod["spec"]["volumes"][0],
            json({{"name", "pprof-sidecar-snapshots"}, {"emptyDir", {{"sizeLimit", "64Mi"}}}}));

  json with_vols = ControllerPod();
  with_vols["spec"]["volumes"] = json::array({{{"name", "cfg"}, {"emptyDir", json::object()}}});
  Outcome v = Admit(with_vols);
  ASSERT_TRUE(v.patched);
  ASSERT_EQ(v.pod["spec"]["volumes"].size(), 2u);
  EXPECT_EQ(v.pod["spec"]["volumes"][0]["name"], "cfg");

  // Which container is the target is unknown: no limit from the pod spec (the cgroup's is read).
  json two = ControllerPod();
  two["spec"]["containers"].push_back({{"name", "worker"}, {"image", "w:1"}});
  Outcome t = Admit(two);
  ASSERT_TRUE(t.patched);
  EXPECT_FALSE((*FindContainer(t.pod, "pprof-sidecar")).contains("env"));

  json taken = ControllerPod();
  taken["spec"]["volumes"] = json::array({{{"name", "pprof-sidecar-snapshots"}}});
  Outcome c = Admit(taken);
  EXPECT_FALSE(c.patched);
  EXPECT_TRUE(absl::StrContains(c.response["warnings"][0].get<std::string>(), "volume"));
}

TEST_F(WebhookTest, SecondPassAndHandPatchedPodsAreLeftAlone) {
  Outcome first = Admit(ControllerPod());
  ASSERT_TRUE(first.patched);
  // Reinvocation (reinvocationPolicy or a second webhook) on the injected pod.
  Outcome again = Admit(first.pod);
  EXPECT_FALSE(again.patched) << again.response.dump();
  EXPECT_TRUE(again.response["allowed"].get<bool>());

  // A Deployment patched by hand/kustomize: it carries the containers but no status annotation.
  json hand = first.pod;
  hand["metadata"]["annotations"].erase("pprof-sidecar.io/status");
  Outcome h = Admit(hand);
  EXPECT_FALSE(h.patched) << h.response.dump();
  EXPECT_EQ(h.pod["spec"]["containers"].size(), 3u);
}

TEST_F(WebhookTest, PodsThatDoNotOptInAreNotTouched) {
  json none = ControllerPod();
  none["metadata"].erase("annotations");
  Outcome a = Admit(none);
  EXPECT_FALSE(a.patched);
  EXPECT_TRUE(a.response["allowed"].get<bool>());

  json off = ControllerPod();
  off["metadata"]["annotations"]["pprof-sidecar.io/inject"] = "false";
  EXPECT_FALSE(Admit(off).patched);

  json typo = ControllerPod();
  typo["metadata"]["annotations"]["pprof-sidecar.io/inject"] = "yes";
  Outcome t = Admit(typo);
  EXPECT_FALSE(t.patched);
  ASSERT_TRUE(t.response.contains("warnings"));
  EXPECT_TRUE(
      absl::StrContains(t.response["warnings"][0].get<std::string>(), "pprof-sidecar.io/inject"));

  // Only pod CREATE is mutated.
  EXPECT_FALSE(Admit(ControllerPod(), "UPDATE").patched);
}

TEST_F(WebhookTest, TargetSelectionFromAnnotations) {
  json pod = ControllerPod();
  pod["spec"]["containers"].push_back(
      {{"name", "worker"}, {"image", "w:1"}, {"command", json::array({"/usr/bin/my.worker+2"})}});
  // Two containers and no hint: the agent picks the largest process itself.
  Outcome auto_pick = Admit(pod);
  ASSERT_TRUE(auto_pick.patched);
  for (const json& a : (*FindContainer(auto_pick.pod, "pprof-sidecar"))["args"]) {
    EXPECT_FALSE(absl::StartsWith(a.get<std::string>(), "--target_name")) << a;
  }

  pod["metadata"]["annotations"]["pprof-sidecar.io/target-container"] = "worker";
  Outcome by_container = Admit(pod);
  ASSERT_TRUE(by_container.patched);
  EXPECT_TRUE(
      HasArg(*FindContainer(by_container.pod, "pprof-sidecar"), "--target_name=my\\.worker\\+2"));

  pod["metadata"]["annotations"]["pprof-sidecar.io/target-name"] = "manager|worker";
  Outcome by_name = Admit(pod);
  ASSERT_TRUE(by_name.patched);
  EXPECT_TRUE(HasArg(*FindContainer(by_name.pod, "pprof-sidecar"), "--target_name=manager|worker"));

  json missing = ControllerPod();
  missing["metadata"]["annotations"]["pprof-sidecar.io/target-container"] = "nope";
  Outcome m = Admit(missing);
  EXPECT_FALSE(m.patched);
  ASSERT_TRUE(m.response.contains("warnings"));
  EXPECT_TRUE(absl::StrContains(m.response["warnings"][0].get<std::string>(), "target-container"));

  // A shell wrapper says nothing about the real process.
  json shell = ControllerPod();
  shell["spec"]["containers"][0]["command"] = json::array({"/bin/sh", "-c", "exec /manager"});
  Outcome s = Admit(shell);
  ASSERT_TRUE(s.patched);
  for (const json& a : (*FindContainer(s.pod, "pprof-sidecar"))["args"]) {
    EXPECT_FALSE(absl::StartsWith(a.get<std::string>(), "--target_name")) << a;
  }
}

TEST_F(WebhookTest, ConflictsAreReportedNotInjected) {
  json host_pid = ControllerPod();
  host_pid["spec"]["hostPID"] = true;
  Outcome h = Admit(host_pid);
  EXPECT_FALSE(h.patched);
  EXPECT_TRUE(absl::StrContains(h.response["warnings"][0].get<std::string>(), "hostPID"));

  json port = ControllerPod();
  port["spec"]["containers"][0]["ports"].push_back({{"containerPort", 6060}});
  Outcome p = Admit(port);
  EXPECT_FALSE(p.patched);
  EXPECT_TRUE(absl::StrContains(p.response["warnings"][0].get<std::string>(), "6060"));
}

TEST_F(WebhookTest, PrivilegedSysResourceReadinessNativeHeapOptInsAndNoKernelSymbols) {
  StopServer();
  InjectorConfig cfg;
  cfg.privileged = true;
  cfg.sys_resource = true;
  cfg.kernel_symbols = false;
  cfg.native_heap = true;
  cfg.readiness_gate = true;
  cfg.agent_image = "registry.example/pprof-sidecar:1.2.3";
  StartServer(cfg);
  Outcome o = Admit(ControllerPod());
  ASSERT_TRUE(o.patched);
  const json* agent = FindContainer(o.pod, "pprof-sidecar");
  ASSERT_NE(agent, nullptr);
  EXPECT_EQ((*agent)["image"], "registry.example/pprof-sidecar:1.2.3");
  const json& sc = (*agent)["securityContext"];
  EXPECT_EQ(sc["privileged"], true);
  // The API server rejects privileged with allowPrivilegeEscalation: false.
  EXPECT_FALSE(sc.contains("allowPrivilegeEscalation"));
  EXPECT_EQ(sc["capabilities"]["add"],
            json::array({"BPF", "PERFMON", "SYS_PTRACE", "SYS_RESOURCE", "SYS_ADMIN"}));
  EXPECT_EQ((*agent)["readinessProbe"]["exec"]["command"][1], "--probe=/healthz");
}

TEST_F(WebhookTest, BadRequestsGetClearErrorsAndServerKeepsServing) {
  auto garbage = Post("{not json");
  ASSERT_TRUE(garbage);
  EXPECT_EQ(garbage->status, 400);
  EXPECT_TRUE(absl::StrContains(garbage->body, "not valid JSON")) << garbage->body;

  json no_uid = Review(ControllerPod(), "x");
  no_uid["request"].erase("uid");
  auto r2 = Post(no_uid.dump());
  ASSERT_TRUE(r2);
  EXPECT_EQ(r2->status, 400);
  EXPECT_TRUE(absl::StrContains(r2->body, "request.uid")) << r2->body;

  json beta = Review(ControllerPod(), "x");
  beta["apiVersion"] = "admission.k8s.io/v1beta1";
  auto r3 = Post(beta.dump());
  ASSERT_TRUE(r3);
  EXPECT_EQ(r3->status, 400);

  // A well-formed review whose object is not a Pod: an AdmissionReview error response.
  json bad_obj = Review(json("a string"), "uid-bad");
  auto r4 = Post(bad_obj.dump());
  ASSERT_TRUE(r4);
  ASSERT_EQ(r4->status, 200);
  json resp = json::parse(r4->body)["response"];
  EXPECT_EQ(resp["uid"], "uid-bad");
  EXPECT_EQ(resp["allowed"], false);
  EXPECT_EQ(resp["status"]["code"], 400);
  EXPECT_TRUE(absl::StrContains(resp["status"]["message"].get<std::string>(), "not a JSON object"));

  json bad_containers = ControllerPod();
  bad_containers["spec"]["containers"] = "nope";
  auto r5 = Post(Review(bad_containers, "uid-c").dump());
  ASSERT_TRUE(r5);
  EXPECT_EQ(json::parse(r5->body)["response"]["allowed"], false);

  // Invalid UTF-8 inside a string must not break serialization.
  std::string raw = Review(ControllerPod(), "uid-utf").dump();
  raw.replace(raw.find("controller:latest"), 4, "\xff\xfe\xfd\xfc");
  auto r6 = Post(raw);
  ASSERT_TRUE(r6);
  EXPECT_NE(r6->status, 500);

  // Still serving.
  EXPECT_TRUE(Admit(ControllerPod()).patched);
}

TEST_F(WebhookTest, RotatedCertificateIsServedWithoutRestart) {
  ASSERT_TRUE(Admit(ControllerPod()).patched);
  MakeCert(dir_, "b", "webhook-b");
  auto old_ca = Post(Review(ControllerPod(), "u").dump(), "b");
  EXPECT_FALSE(old_ca) << "server should still present certificate a";
  // Rotate in place, as a Secret volume update or cert-manager renewal does.
  ASSERT_EQ(RunCommand(absl::StrCat("cp ", dir_, "/b.key ", dir_, "/a.key && cp ", dir_, "/b.crt ",
                                    dir_, "/a.crt"))
                .exit_code,
            0);
  auto new_ca = Post(Review(ControllerPod(), "u2").dump(), "b");
  ASSERT_TRUE(new_ca) << httplib::to_string(new_ca.error());
  EXPECT_EQ(new_ca->status, 200);
}

TEST(WebhookServerCreate, RejectsMismatchedKey) {
  std::string dir = MakeTempDir("webhook_create");
  MakeCert(dir, "a", "a");
  MakeCert(dir, "b", "b");
  auto s = WebhookServer::Create(dir + "/a.crt", dir + "/b.key", InjectorConfig{});
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.status().message(), "does not match")) << s.status();
  auto missing = WebhookServer::Create(dir + "/none.crt", dir + "/b.key", InjectorConfig{});
  EXPECT_FALSE(missing.ok());
}

}  // namespace
}  // namespace pprof_sidecar
