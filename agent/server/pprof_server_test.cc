#include "agent/server/pprof_server.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <future>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/profile/cpu_source.h"
#include "agent/server/http_params.h"
#include "agent/testing/fake_cpu_sampler.h"
#include "gtest/gtest.h"
#include "tests/testutil/pprof_summary.h"
#include "tests/testutil/testutil.h"

extern "C" __attribute__((noinline)) int PprofServerTestLeaf(int x) {
  asm volatile("" ::: "memory");
  return x * 3 + 1;
}
extern "C" __attribute__((noinline)) int PprofServerTestCaller(int x) {
  asm volatile("" ::: "memory");
  return PprofServerTestLeaf(x) + 2;
}

namespace pprof_sidecar {
namespace {

using ::pprof_sidecar::testing::FakeCpuSampler;

// A kind with Go's heap-like parameters (a delta with ?seconds, debug=0/1) that records what the
// server passed it.
class RecordingSource : public ProfileSource {
 public:
  RecordingSource() {
    info_.name = "recorded";
    info_.description = "records its requests";
    info_.seconds = ProfileKindInfo::Seconds::kDelta;
    info_.debug_levels = {0, 1};
    info_.filename = "recorded";
  }
  const ProfileKindInfo& info() const override { return info_; }
  absl::StatusOr<ProfileResponse> Collect(const ProfileRequest& req) override {
    ++calls;
    last_debug = req.debug;
    last_seconds = req.seconds;
    if (!error.ok()) return error;
    ProfileResponse r;
    r.body = "body";
    return r;
  }
  std::atomic<int> calls{0};
  int last_debug = -1;
  absl::Duration last_seconds;
  absl::Status error;

 private:
  ProfileKindInfo info_;
};

class PprofServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Our own process is the "target": the fake sampler reports stacks made of addresses of the
    // two functions above, which the real symbolizer must resolve from this test binary.
    stack_ = {reinterpret_cast<uint64_t>(&PprofServerTestLeaf) + 1,
              reinterpret_cast<uint64_t>(&PprofServerTestCaller) + 5};
    cpu_ = std::make_unique<CpuProfiler>(
        [this]() -> absl::StatusOr<std::unique_ptr<CpuSampler>> {
          if (!sampler_error_.empty()) return absl::PermissionDeniedError(sampler_error_);
          return std::unique_ptr<CpuSampler>(new FakeCpuSampler(stack_, weight_));
        },
        &symbolizer_, 100);
    ASSERT_TRUE(cpu_->SetTargets({static_cast<uint32_t>(getpid())}).ok());
    auto self = ReadProcessInfo(getpid());
    ASSERT_TRUE(self.ok());
    self_ = *self;
    TargetView view{[this]() -> std::optional<ProcessInfo> {
                      if (has_target_) return self_;
                      return std::nullopt;
                    },
                    [] { return std::string("test status"); }};
    ServerOptions so;
    so.max_profile_seconds = 10;
    MakeRegistry();
    server_ = std::make_unique<PprofServer>(registry_.get(), &symbolizer_, view, so);
    ASSERT_TRUE(server_->Bind("127.0.0.1", 0).ok());
    serve_ = std::thread([this] { (void)server_->Serve(); });
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
    client_->set_read_timeout(30, 0);
  }
  void TearDown() override {
    server_->Stop();
    serve_.join();
  }

  // A registry with the CPU kind over cpu_ and Go's other names as not served.
  void MakeRegistry() {
    registry_ = std::make_unique<ProfileRegistry>();
    ASSERT_TRUE(registry_->Add(std::make_unique<CpuSource>(cpu_.get())).ok());
    ASSERT_TRUE(registry_->AddUnowned(&recording_).ok());
    registry_->NotServed("goroutine", "not produced yet");
  }

  RecordingSource recording_;
  std::unique_ptr<ProfileRegistry> registry_;
  std::vector<uint64_t> stack_;
  uint32_t weight_ = 1;        // of every fake sample
  std::string sampler_error_;  // non-empty: creating a sampler fails with it
  ProcessSymbolizer symbolizer_;
  std::unique_ptr<CpuProfiler> cpu_;
  ProcessInfo self_;
  std::atomic<bool> has_target_{true};
  std::unique_ptr<PprofServer> server_;
  std::thread serve_;
  std::unique_ptr<httplib::Client> client_;
};

TEST(ParseSecondsParamTest, GoLikeStrictParsing) {
  EXPECT_EQ(*ParseSecondsParam(std::nullopt, 30, 300), 30);
  EXPECT_FALSE(ParseSecondsParam("", 30, 300).ok());  // `seconds=`: present, not an integer

  EXPECT_EQ(*ParseSecondsParam("5", 30, 300), 5);
  EXPECT_FALSE(ParseSecondsParam("abc", 30, 300).ok());
  EXPECT_FALSE(ParseSecondsParam("-1", 30, 300).ok());
  EXPECT_FALSE(ParseSecondsParam("0", 30, 300).ok());
  EXPECT_FALSE(ParseSecondsParam("1.5", 30, 300).ok());
  EXPECT_FALSE(ParseSecondsParam("301", 30, 300).ok());
  EXPECT_FALSE(ParseSecondsParam("99999999999999999999", 30, 300).ok());
}

TEST(ListenAddressTest, ParsesAndClassifies) {
  auto a = ParseListenAddress("127.0.0.1:6060");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 6060);
  auto b = ParseListenAddress("[::1]:7000");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->host, "::1");
  EXPECT_EQ(b->port, 7000);
  EXPECT_FALSE(ParseListenAddress("6060").ok());
  EXPECT_FALSE(ParseListenAddress("1.2.3.4:99999").ok());
  EXPECT_FALSE(ParseListenAddress("[::1:80").ok());
  EXPECT_TRUE(IsLoopbackHost("127.0.0.1"));
  EXPECT_TRUE(IsLoopbackHost("127.8.9.10"));
  EXPECT_TRUE(IsLoopbackHost("::1"));
  EXPECT_TRUE(IsLoopbackHost("localhost"));
  EXPECT_FALSE(IsLoopbackHost("0.0.0.0"));
  EXPECT_FALSE(IsLoopbackHost("10.0.0.1"));
  EXPECT_FALSE(IsLoopbackHost("::"));
}

TEST_F(PprofServerTest, BadSecondsAnswered400LikeGoErrors) {
  for (const char* q : {"abc", "-3", "0", "11"}) {
    auto r = client_->Get(absl::StrCat("/debug/pprof/profile?seconds=", q).c_str());
    ASSERT_TRUE(r) << q;
    EXPECT_EQ(r->status, 400) << q;
    EXPECT_EQ(r->get_header_value("Content-Type"), "text/plain; charset=utf-8");
    EXPECT_EQ(r->get_header_value("X-Go-Pprof"), "1");
    EXPECT_FALSE(r->has_header("Content-Disposition"));
  }
  // The server keeps serving after bad input.
  auto h = client_->Get("/healthz");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
}

TEST_F(PprofServerTest, ProfileIsValidAndSymbolizedFromTheTargetBinary) {
  auto r = client_->Get("/debug/pprof/profile?seconds=1");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->get_header_value("Content-Type"), "application/octet-stream");
  EXPECT_EQ(r->get_header_value("Content-Disposition"), "attachment; filename=\"profile\"");
  EXPECT_EQ(r->get_header_value("X-Content-Type-Options"), "nosniff");
  std::string dir = testing::MakeTempDir("pprof-server-test");
  std::string path = dir + "/cpu.pb.gz";
  std::ofstream(path, std::ios::binary) << r->body;
  auto sum = testing::SummarizeProfile(path);
  ASSERT_TRUE(sum.ok()) << sum.status();
  ASSERT_EQ(sum->sample_types.size(), 2u);
  EXPECT_EQ(sum->sample_types[0].type, "samples");
  EXPECT_EQ(sum->sample_types[1].unit, "nanoseconds");
  EXPECT_EQ(sum->period, 10000000);
  // ~100 samples over one second from the fake sampler.
  EXPECT_GT(sum->totals[0], 50);
  EXPECT_LT(sum->totals[0], 150);
  EXPECT_EQ(sum->totals[1], sum->totals[0] * 10000000);
  EXPECT_NEAR(testing::FlatShare(*sum, "PprofServerTestLeaf"), 1.0, 1e-9);
  EXPECT_NEAR(testing::CumShare(*sum, "PprofServerTestCaller"), 1.0, 1e-9);
}

// Tick-clock samples standing for several periods each count them all.
class WeightedSamplesTest : public PprofServerTest {
 protected:
  WeightedSamplesTest() { weight_ = 4; }
};

TEST_F(WeightedSamplesTest, ValuesCountEveryPeriodOfASample) {
  auto r = client_->Get("/debug/pprof/profile?seconds=1");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  std::string path = testing::MakeTempDir("pprof-server-test") + "/cpu.pb.gz";
  std::ofstream(path, std::ios::binary) << r->body;
  auto sum = testing::SummarizeProfile(path);
  ASSERT_TRUE(sum.ok()) << sum.status();
  int64_t records = 0;
  for (const auto& s : sum->samples) {
    ASSERT_EQ(s.values.size(), 2u);
    EXPECT_EQ(s.values[0] % 4, 0) << s.values[0];
    records += s.values[0] / 4;
  }
  // ~25 samples of weight 4 over one second: ~100 periods of 10 ms, as at any clock.
  EXPECT_GT(sum->totals[0], 50);
  EXPECT_LT(sum->totals[0], 150);
  EXPECT_EQ(sum->totals[1], sum->totals[0] * 10000000);
  bool said = false;
  for (const auto& c : sum->comments) {
    said |= absl::StrContains(
        c, absl::StrCat(records, " samples at 100 Hz taken at the scheduler tick"));
  }
  EXPECT_TRUE(said) << "no comment on " << records << " tick samples";
}

TEST_F(PprofServerTest, ConcurrentProfilesAreAllServed) {
  auto get = [this](int s) {
    httplib::Client c("127.0.0.1", server_->port());
    c.set_read_timeout(30, 0);
    auto r = c.Get(absl::StrCat("/debug/pprof/profile?seconds=", s).c_str());
    return r ? r->status : -1;
  };
  auto a = std::async(std::launch::async, get, 2);
  auto b = std::async(std::launch::async, get, 1);
  auto c = std::async(std::launch::async, get, 1);
  EXPECT_EQ(a.get(), 200);
  EXPECT_EQ(b.get(), 200);
  EXPECT_EQ(c.get(), 200);
  EXPECT_EQ(cpu_->stats().windows_started, 3u);
}

TEST_F(PprofServerTest, NoTargetGives503AndHealthzSaysSo) {
  has_target_ = false;
  auto r = client_->Get("/debug/pprof/profile?seconds=1");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_TRUE(absl::StrContains(r->body, "no target process")) << r->body;
  auto h = client_->Get("/healthz");
  ASSERT_TRUE(h);
  EXPECT_TRUE(absl::StrContains(h->body, "target: none")) << h->body;
}

TEST_F(PprofServerTest, HealthzNamesTheClockAndMetricsSayReady) {
  auto h = client_->Get("/healthz");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  EXPECT_TRUE(absl::StartsWith(h->body, "ok\n")) << h->body;
  EXPECT_TRUE(absl::StrContains(h->body, "cpu: tick clock at fake/tick, default BPF program"))
      << h->body;
  auto m = client_->Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_TRUE(absl::StrContains(m->body, "\npprof_sidecar_cpu_profiling_ready 1\n")) << m->body;
  EXPECT_TRUE(absl::StrContains(m->body, "pprof_sidecar_cpu_sampling_clock{clock=\"tick\"} 1"));
  auto l = client_->Get("/livez");
  ASSERT_TRUE(l);
  EXPECT_EQ(l->status, 200);
}

// Without a sampler (no BPF privileges, a kernel that refuses every clock) the agent keeps serving
// and /healthz fails readiness with the reason, and says what still works.
TEST_F(PprofServerTest, HealthzAnswers503WhenNoCpuProfileCanBeTaken) {
  // Replace the fixture's server (once it is up: a stop before it listens is lost).
  ASSERT_TRUE(client_->Get("/livez"));
  server_->Stop();
  serve_.join();
  sampler_error_ = "bpf(BPF_PROG_LOAD): Operation not permitted - needs CAP_BPF";
  cpu_ = std::make_unique<CpuProfiler>(
      [this]() -> absl::StatusOr<std::unique_ptr<CpuSampler>> {
        return absl::PermissionDeniedError(sampler_error_);
      },
      &symbolizer_, 100);
  EXPECT_FALSE(cpu_->Prepare().ok());
  TargetView view{[this]() -> std::optional<ProcessInfo> { return self_; },
                  [] { return std::string("test status"); }};
  MakeRegistry();
  server_ = std::make_unique<PprofServer>(registry_.get(), &symbolizer_, view, ServerOptions());
  ASSERT_TRUE(server_->Bind("127.0.0.1", 0).ok());
  serve_ = std::thread([this] { (void)server_->Serve(); });
  client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
  auto h = client_->Get("/healthz");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 503);
  EXPECT_TRUE(absl::StrContains(h->body, "cpu: unavailable: " + sampler_error_)) << h->body;
  EXPECT_TRUE(absl::StrContains(h->body, "heap: Go targets")) << h->body;
  auto r = client_->Get("/debug/pprof/profile?seconds=1");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_TRUE(absl::StrContains(r->body, sampler_error_)) << r->body;
  auto m = client_->Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_TRUE(absl::StrContains(m->body, "\npprof_sidecar_cpu_profiling_ready 0\n")) << m->body;
  EXPECT_EQ(client_->Get("/livez")->status, 200);
}

TEST_F(PprofServerTest, UnknownAndUnsupportedProfiles) {
  auto r = client_->Get("/debug/pprof/nosuchprofile");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(r->body, "Unknown profile\n");
  EXPECT_EQ(r->get_header_value("X-Go-Pprof"), "1");
  auto h = client_->Get("/debug/pprof/goroutine");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 501);
  EXPECT_TRUE(
      absl::StrContains(h->body, "not produced yet; available: profile, recorded, cmdline, symbol"))
      << h->body;
  auto i = client_->Get("/debug/pprof/");
  ASSERT_TRUE(i);
  EXPECT_TRUE(absl::StrContains(i->body, "<a href='profile'>profile</a>")) << i->body;
  EXPECT_TRUE(absl::StrContains(i->body, "Not served by pprof-sidecar: goroutine.")) << i->body;
}

TEST_F(PprofServerTest, CmdlineIsNulSeparatedLikeGo) {
  std::ifstream f("/proc/self/cmdline", std::ios::binary);
  std::string want((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  want.pop_back();
  auto r = client_->Get("/debug/pprof/cmdline");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, want);
}

TEST_F(PprofServerTest, SymbolEndpointResolvesTargetAddresses) {
  auto g = client_->Get("/debug/pprof/symbol");
  ASSERT_TRUE(g);
  EXPECT_EQ(g->body, "num_symbols: 1\n");
  uint64_t pc = reinterpret_cast<uint64_t>(&PprofServerTestCaller) + 2;
  auto p = client_->Post("/debug/pprof/symbol", absl::StrCat("0x", absl::Hex(pc)), "text/plain");
  ASSERT_TRUE(p);
  EXPECT_TRUE(
      absl::StrContains(p->body, absl::StrCat("0x", absl::Hex(pc), " PprofServerTestCaller")))
      << p->body;
}

TEST_F(PprofServerTest, MetricsCountRequestsAndSamples) {
  ASSERT_TRUE(client_->Get("/debug/pprof/profile?seconds=1"));
  ASSERT_TRUE(client_->Get("/debug/pprof/profile?seconds=x"));
  // Requests are counted before their response is sent: no waiting.
  auto r = client_->Get("/metrics");
  ASSERT_TRUE(r);
  const std::string body = r->body;
  EXPECT_TRUE(absl::StrContains(body, "pprof_sidecar_http_requests_total{code=\"400\"} 1")) << body;
  EXPECT_TRUE(absl::StrContains(body, "pprof_sidecar_http_requests_total{code=\"200\"} 1"));
  EXPECT_TRUE(
      absl::StrContains(body, "pprof_sidecar_samples_dropped_total{reason=\"ringbuf_full\"} 0"));
  EXPECT_FALSE(absl::StrContains(body, "pprof_sidecar_profile_samples_total 0\n"));
  for (const char* m :
       {"pprof_sidecar_stack_copy_errors_total 0",
        "pprof_sidecar_stack_copies_bounded_total{by=\"go_stack_hi\"} 0",
        "pprof_sidecar_stack_copy_bytes_total 0", "pprof_sidecar_bpf_runs_total 0"}) {
    EXPECT_TRUE(absl::StrContains(body, m)) << m;
  }
  EXPECT_TRUE(absl::StrContains(body, absl::StrCat("pprof_sidecar_target_pid ", getpid())));
}

int Connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Sends `bytes` (then half-closes if asked) and reads until the server closes or `timeout`.
std::string Exchange(int port, const std::string& bytes, bool half_close,
                     absl::Duration timeout = absl::Seconds(5)) {
  int fd = Connect(port);
  if (fd < 0) return "";
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = send(fd, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n <= 0) break;
    off += n;
  }
  if (half_close) shutdown(fd, SHUT_WR);
  std::string out;
  const absl::Time deadline = absl::Now() + timeout;
  char buf[65536];
  while (absl::Now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 50) <= 0) continue;
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    out.append(buf, n);
  }
  close(fd);
  return out;
}

// A client that reads /metrics right after its response always finds its request counted: the
// second connection is open already and asks as soon as the first response's bytes arrive, while
// other threads keep the CPUs busy (so the server's threads are preempted at any point).
TEST_F(PprofServerTest, EveryRequestIsCountedBeforeItsResponseArrives) {
  std::atomic<bool> stop{false};
  std::vector<std::thread> spinners;
  for (int i = 0; i < 4; ++i) {
    spinners.emplace_back([&stop] {
      volatile uint64_t x = 0;
      while (!stop.load(std::memory_order_relaxed)) x = x + 1;
    });
  }
  int first_failure = 0;
  for (int i = 1; i <= 2000 && first_failure == 0; ++i) {
    int a = Connect(server_->port()), b = Connect(server_->port());
    ASSERT_GE(a, 0);
    ASSERT_GE(b, 0);
    const std::string nope = "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n";
    const std::string metrics = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    ASSERT_EQ(send(a, nope.data(), nope.size(), MSG_NOSIGNAL), static_cast<ssize_t>(nope.size()));
    char c;
    ASSERT_EQ(recv(a, &c, 1, 0), 1);  // the first byte of the 404
    ASSERT_EQ(send(b, metrics.data(), metrics.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(metrics.size()));
    std::string out;
    char buf[65536];
    for (ssize_t n; (n = recv(b, buf, sizeof(buf), 0)) > 0;) out.append(buf, n);
    close(a);
    close(b);
    if (!absl::StrContains(
            out, absl::StrCat("pprof_sidecar_http_requests_total{code=\"404\"} ", i, "\n"))) {
      first_failure = i;
    }
  }
  stop.store(true);
  for (auto& t : spinners) t.join();
  EXPECT_EQ(first_failure, 0) << "request " << first_failure
                              << " was not counted when its client read /metrics";
}

int CountOf(const std::string& haystack, const std::string& needle) {
  int n = 0;
  for (size_t p = haystack.find(needle); p != std::string::npos; p = haystack.find(needle, p + 1)) {
    ++n;
  }
  return n;
}

TEST_F(PprofServerTest, PipelinedAndHalfClosedClientsAreAnswered) {
  const std::string two =
      "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /debug/pprof/cmdline HTTP/1.1\r\nHost: "
      "x\r\nConnection: close\r\n\r\n";
  std::string out = Exchange(server_->port(), two, false);
  EXPECT_EQ(CountOf(out, "HTTP/1.1 200 OK\r\n"), 2) << out;
  // The same request, then the client shuts down its sending side and waits.
  out = Exchange(server_->port(), "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", true);
  EXPECT_TRUE(absl::StartsWith(out, "HTTP/1.1 200 OK\r\n")) << out;
  EXPECT_TRUE(absl::StrContains(out, "\r\n\r\nok\n")) << out;
}

TEST_F(PprofServerTest, EmptySecondsIsABadRequest) {
  const absl::Time t0 = absl::Now();
  auto r = client_->Get("/debug/pprof/profile?seconds=");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400) << r->body;
  EXPECT_TRUE(absl::StrContains(r->body, "positive integer")) << r->body;
  EXPECT_LT(absl::Now() - t0, absl::Seconds(5));
  auto h = client_->Get("/debug/pprof/recorded?seconds=");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 400);
  EXPECT_EQ(recording_.calls, 0);
}

// The server checks a kind's declared parameters, sets Go's headers and maps its errors; the
// kind only sees valid requests.
TEST_F(PprofServerTest, KindsGetCheckedParametersAndTheirErrorsMapToCodes) {
  auto bad = client_->Get("/debug/pprof/recorded?debug=2");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  EXPECT_TRUE(absl::StrContains(bad->body, "accepted: 0, 1")) << bad->body;
  EXPECT_EQ(recording_.calls, 0);
  auto text = client_->Get("/debug/pprof/recorded?debug=1");
  ASSERT_TRUE(text);
  EXPECT_EQ(text->status, 200);
  EXPECT_EQ(text->get_header_value("Content-Type"), "text/plain; charset=utf-8");
  EXPECT_EQ(recording_.last_debug, 1);
  auto delta = client_->Get("/debug/pprof/recorded?seconds=1");
  ASSERT_TRUE(delta);
  EXPECT_EQ(delta->get_header_value("Content-Disposition"),
            "attachment; filename=\"recorded-delta\"");
  EXPECT_EQ(recording_.last_seconds, absl::Seconds(1));
  recording_.error = absl::FailedPreconditionError("the target turned it off");
  auto gone = client_->Get("/debug/pprof/recorded");
  ASSERT_TRUE(gone);
  EXPECT_EQ(gone->status, 503);
  EXPECT_EQ(gone->body, "the target turned it off\n");
  EXPECT_EQ(gone->get_header_value("X-Go-Pprof"), "1");
  recording_.error = absl::UnimplementedError("not for this target");
  EXPECT_EQ(client_->Get("/debug/pprof/recorded")->status, 501);
  EXPECT_EQ(recording_.calls, 4);
  has_target_ = false;
  EXPECT_EQ(client_->Get("/debug/pprof/recorded")->status, 503);
  EXPECT_EQ(recording_.calls, 4);
}

TEST_F(PprofServerTest, HeadDoesNotRunAProfile) {
  const absl::Time t0 = absl::Now();
  auto r = client_->Head("/debug/pprof/profile?seconds=5");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "application/octet-stream");
  EXPECT_EQ(r->get_header_value("Content-Disposition"), "attachment; filename=\"profile\"");
  EXPECT_LT(absl::Now() - t0, absl::Seconds(2));
  EXPECT_EQ(cpu_->stats().windows_started, 0u);
  auto bad = client_->Head("/debug/pprof/profile?seconds=abc");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
}

TEST_F(PprofServerTest, OtherMethodsAre405WithAllow) {
  for (const char* method : {"DELETE", "PUT", "PATCH"}) {
    for (const char* path : {"/debug/pprof/profile", "/healthz", "/debug/pprof/nosuch"}) {
      std::string out = Exchange(server_->port(),
                                 absl::StrCat(method, " ", path,
                                              " HTTP/1.1\r\nHost: x\r\n"
                                              "Content-Length: 0\r\nConnection: close\r\n\r\n"),
                                 false);
      EXPECT_TRUE(absl::StartsWith(out, "HTTP/1.1 405 ")) << method << " " << path << ": " << out;
      EXPECT_TRUE(absl::StrContains(out, "\r\nAllow: GET, HEAD\r\n")) << out;
    }
  }
  std::string out = Exchange(server_->port(),
                             "PUT /debug/pprof/symbol HTTP/1.1\r\nContent-Length: 0\r\n"
                             "Connection: close\r\n\r\n",
                             false);
  EXPECT_TRUE(absl::StrContains(out, "\r\nAllow: GET, POST, HEAD\r\n")) << out;
}

TEST_F(PprofServerTest, OversizedSymbolRequestIsRefused) {
  // A 256 MB POST: refused from its Content-Length, before the body is read.
  const absl::Time t0 = absl::Now();
  std::string out = Exchange(server_->port(),
                             "POST /debug/pprof/symbol HTTP/1.1\r\nContent-Length: 268435456\r\n"
                             "\r\n0x1+",
                             false);
  EXPECT_TRUE(absl::StartsWith(out, "HTTP/1.1 413 ")) << out.substr(0, 200);
  EXPECT_LT(absl::Now() - t0, absl::Seconds(3));
  // Up to the limit is served.
  uint64_t pc = reinterpret_cast<uint64_t>(&PprofServerTestCaller) + 2;
  std::string body = absl::StrCat("0x", absl::Hex(pc));
  while (body.size() < (1 << 20) - 64) absl::StrAppend(&body, "+0x1");
  auto p = client_->Post("/debug/pprof/symbol", body, "text/plain");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->status, 200);
  EXPECT_TRUE(absl::StrContains(p->body, "PprofServerTestCaller")) << p->body.substr(0, 200);
}

// 40 clients sending their request a byte every 200 ms, and then 32 profile windows of 10 s:
// /healthz, /metrics and a 1 s profile still answer at once.
// Latency bounds hold for the shipped (optimized) build; an ASan build runs ~2-3x slower.
#if defined(__SANITIZE_ADDRESS__)  // GCC
#define PPROF_SIDECAR_TEST_ASAN 1
#elif defined(__has_feature)  // clang
#if __has_feature(address_sanitizer)
#define PPROF_SIDECAR_TEST_ASAN 1
#endif
#endif
#ifdef PPROF_SIDECAR_TEST_ASAN
constexpr int kLatencyScale = 3;
#else
constexpr int kLatencyScale = 1;
#endif

TEST_F(PprofServerTest, SlowClientsAndLongProfilesLeaveRoomForOthers) {
  std::vector<int> slow;
  for (int i = 0; i < 40; ++i) slow.push_back(Connect(server_->port()));
  std::atomic<bool> stop{false};
  std::thread dribble([&] {
    const std::string req = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaaaa\r\n\r\n";
    for (size_t i = 0; i < req.size() && !stop.load(); ++i) {
      for (int fd : slow) send(fd, &req[i], 1, MSG_NOSIGNAL);
      absl::SleepFor(absl::Milliseconds(200));
    }
  });
  absl::SleepFor(absl::Milliseconds(500));
  auto timed_get = [this](const std::string& path, int* status) {
    httplib::Client c("127.0.0.1", server_->port());
    c.set_read_timeout(15, 0);
    c.set_connection_timeout(15, 0);
    const absl::Time t0 = absl::Now();
    auto r = c.Get(path.c_str());
    *status = r ? r->status : -1;
    return absl::Now() - t0;
  };
  int status = 0;
  absl::Duration d = timed_get("/healthz", &status);
  printf("/healthz with 40 slow clients: %s\n", absl::FormatDuration(d).c_str());
  EXPECT_EQ(status, 200);
  EXPECT_LT(d, kLatencyScale * absl::Seconds(1));

  std::vector<std::future<int>> windows;
  for (int i = 0; i < 32; ++i) {
    windows.push_back(std::async(std::launch::async, [this] {
      httplib::Client c("127.0.0.1", server_->port());
      c.set_read_timeout(30, 0);
      auto r = c.Get("/debug/pprof/profile?seconds=10");
      return r ? r->status : -1;
    }));
  }
  for (int i = 0; i < 100 && cpu_->stats().windows_active < 32; ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_EQ(cpu_->stats().windows_active, 32u);
  d = timed_get("/healthz", &status);
  printf("/healthz with 40 slow clients and 32 windows open: %s\n",
         absl::FormatDuration(d).c_str());
  EXPECT_EQ(status, 200);
  EXPECT_LT(d, kLatencyScale * absl::Seconds(1));
  d = timed_get("/metrics", &status);
  EXPECT_EQ(status, 200);
  EXPECT_LT(d, kLatencyScale * absl::Seconds(1));
  d = timed_get("/debug/pprof/profile?seconds=1", &status);
  printf("1 s profile with 32 windows open: %s\n", absl::FormatDuration(d).c_str());
  EXPECT_EQ(status, 200);
  EXPECT_LT(d, kLatencyScale * absl::Seconds(2));
  stop.store(true);
  dribble.join();
  for (int fd : slow) close(fd);
  for (auto& w : windows) EXPECT_EQ(w.get(), 200);
}

}  // namespace
}  // namespace pprof_sidecar
