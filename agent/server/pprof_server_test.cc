#include "agent/server/pprof_server.h"

#include <httplib.h>
#include <unistd.h>

#include <fstream>
#include <future>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
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

class PprofServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Our own process is the "target": the fake sampler reports stacks made of addresses of the
    // two functions above, which the real symbolizer must resolve from this test binary.
    stack_ = {reinterpret_cast<uint64_t>(&PprofServerTestLeaf) + 1,
              reinterpret_cast<uint64_t>(&PprofServerTestCaller) + 5};
    cpu_ = std::make_unique<CpuProfiler>(
        [this]() -> absl::StatusOr<std::unique_ptr<CpuSampler>> {
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
    server_ = std::make_unique<PprofServer>(cpu_.get(), &symbolizer_, view, so);
    ASSERT_TRUE(server_->Bind("127.0.0.1", 0).ok());
    serve_ = std::thread([this] { (void)server_->Serve(); });
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
    client_->set_read_timeout(30, 0);
  }
  void TearDown() override {
    server_->Stop();
    serve_.join();
  }

  std::vector<uint64_t> stack_;
  uint32_t weight_ = 1;  // of every fake sample
  ProcessSymbolizer symbolizer_;
  std::unique_ptr<CpuProfiler> cpu_;
  ProcessInfo self_;
  std::atomic<bool> has_target_{true};
  std::unique_ptr<PprofServer> server_;
  std::thread serve_;
  std::unique_ptr<httplib::Client> client_;
};

TEST(ParseSecondsParamTest, GoLikeStrictParsing) {
  EXPECT_EQ(*ParseSecondsParam("", 30, 300), 30);
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

TEST_F(PprofServerTest, UnknownAndUnsupportedProfiles) {
  auto r = client_->Get("/debug/pprof/nosuchprofile");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(r->body, "Unknown profile\n");
  EXPECT_EQ(r->get_header_value("X-Go-Pprof"), "1");
  auto h = client_->Get("/debug/pprof/heap");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 501);
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
  // Requests are counted by the server's logger, which runs after the response is written:
  // poll briefly until both earlier requests are counted.
  std::string body;
  for (int i = 0; i < 50; ++i) {
    auto r = client_->Get("/metrics");
    ASSERT_TRUE(r);
    body = r->body;
    if (absl::StrContains(body, "pprof_sidecar_http_requests_total{code=\"400\"} 1")) break;
    usleep(20 * 1000);
  }
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

}  // namespace
}  // namespace pprof_sidecar
