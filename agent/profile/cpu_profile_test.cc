// BuildCpuProfile with the real symbolizer: kernel frames keep their names and lose their
// addresses (no KASLR offset in profiles), or are one [kernel] frame without kernel symbols.
#include "agent/profile/cpu_profile.h"

#include <unistd.h>

#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "agent/symbolize/kallsyms.h"
#include "gtest/gtest.h"
#include "pprof_encoder/builder.h"
#include "tests/testutil/pprof_summary.h"
#include "tests/testutil/testutil.h"

extern "C" __attribute__((noinline)) int CpuProfileTestLeaf(int x) { return x * 3 + 1; }

namespace pprof_sidecar {
namespace {

// A profile of two samples of this process with kernel frames, built with /proc/kallsyms
// replaced by `kallsyms_text`.
testing::PprofSummary BuildWithKallsyms(const std::string& kallsyms_text) {
  const std::string dir = testing::MakeTempDir("cpu-profile-test");
  std::ofstream(dir + "/kallsyms") << kallsyms_text;
  ProcessSymbolizer::Options so;
  so.kallsyms_path = dir + "/kallsyms";
  ProcessSymbolizer symbolizer(so);
  StackSample s;
  s.pid = s.tid = static_cast<uint32_t>(getpid());
  s.user_ips = {reinterpret_cast<uint64_t>(&CpuProfileTestLeaf) + 1};
  s.kernel_ips = {0xffffffff81000123, 0xffffffff81000456};
  s.in_kernel = true;
  CpuProfileParams p;
  p.start = absl::Now();
  p.duration = absl::Seconds(1);
  CpuProfileReport rep;
  auto gz = BuildCpuProfile({s, s}, p, &symbolizer, &rep);
  EXPECT_TRUE(gz.ok()) << gz.status();
  std::ofstream(dir + "/p.pb.gz") << *gz;
  auto sum = testing::SummarizeProfile(dir + "/p.pb.gz");
  EXPECT_TRUE(sum.ok()) << sum.status();
  return *sum;
}

TEST(CpuProfileTest, KernelFramesNamedFromKallsyms) {
  testing::PprofSummary s =
      BuildWithKallsyms("ffffffff81000100 T do_syscall_64\nffffffff81000400 T entry_SYSCALL_64\n");
  ASSERT_EQ(s.samples.size(), 1u);
  const auto& frames = s.samples[0].frames;
  ASSERT_GE(frames.size(), 3u);
  EXPECT_EQ(frames[0], "do_syscall_64");
  EXPECT_EQ(frames[1], "entry_SYSCALL_64");
  EXPECT_EQ(frames[2], "CpuProfileTestLeaf");
}

// Without kernel symbols (kernel.kptr_restrict, or perf_event_paranoid > 1, and no CAP_SYSLOG:
// /proc/kallsyms reads as zeros) the kernel part of a stack is one "[kernel]" frame, and the
// profile says why.
TEST(CpuProfileTest, HiddenKallsymsGiveOneKernelFrameAndSayWhy) {
  testing::PprofSummary s =
      BuildWithKallsyms("0000000000000000 T do_syscall_64\n0000000000000000 T entry_SYSCALL_64\n");
  ASSERT_EQ(s.samples.size(), 1u);
  const auto& frames = s.samples[0].frames;
  ASSERT_EQ(frames.size(), 2u) << absl::StrJoin(frames, " ");
  EXPECT_EQ(frames[0], "[kernel]");
  EXPECT_EQ(frames[1], "CpuProfileTestLeaf");
  bool said = false;
  for (const auto& c : s.comments) {
    said = said || (absl::StrContains(c, "4 kernel frames shown as [kernel]") &&
                    absl::StrContains(c, "CAP_SYSLOG"));
  }
  EXPECT_TRUE(said) << absl::StrJoin(s.comments, "\n");
  EXPECT_FALSE(absl::StrContains(s.raw, "ffffffff81")) << "kernel addresses in the profile";
}

TEST(CpuProfileTest, KernelFramesHaveNamesButNoAddresses) {
  ProcessSymbolizer symbolizer;
  const Kallsyms* k = symbolizer.kallsyms();
  if (k == nullptr || !k->Lookup(0xffffffff81000000ULL + 0x1000)) {
    GTEST_SKIP() << "/proc/kallsyms shows no addresses here (kptr_restrict without CAP_SYSLOG)";
  }
  // Two real kernel text addresses, found through the symbol table itself, and one outside it.
  std::vector<uint64_t> kernel;
  std::set<std::string> names;
  for (uint64_t a = 0xffffffff81000000ULL + 0x10000; kernel.size() < 2; a += 0x40000) {
    auto s = k->Lookup(a);
    ASSERT_TRUE(s.has_value());
    if (s->module.empty() && names.insert(s->name).second) kernel.push_back(a);
  }
  const uint64_t outside = 0x1000;  // not a kernel address: unsymbolized
  StackSample s;
  s.pid = s.tid = static_cast<uint32_t>(getpid());
  s.kernel_ips = {kernel[0], kernel[1], outside};
  s.user_ips = {reinterpret_cast<uint64_t>(&getpid)};
  CpuProfileParams p;
  p.start = absl::Now();
  p.duration = absl::Seconds(1);
  CpuProfileReport rep;
  auto gz = BuildCpuProfile({s, s}, p, &symbolizer, &rep);
  ASSERT_TRUE(gz.ok()) << gz.status();
  auto raw = pprof_encoder::Gunzip(*gz);
  ASSERT_TRUE(raw.ok());
  perftools::profiles::Profile prof;
  ASSERT_TRUE(prof.ParseFromString(*raw));
  std::map<uint64_t, std::string> fn_name;
  for (const auto& f : prof.function()) fn_name[f.id()] = prof.string_table(f.name());
  std::set<std::string> kernel_names;
  int kernel_locations = 0;
  for (const auto& loc : prof.location()) {
    if (loc.mapping_id() != 0) continue;
    ++kernel_locations;
    EXPECT_EQ(loc.address(), 0u) << "kernel location " << loc.id() << " carries an address";
    ASSERT_EQ(loc.line_size(), 1);
    kernel_names.insert(fn_name[loc.line(0).function_id()]);
  }
  EXPECT_EQ(kernel_locations, 3);
  for (const std::string& n : names) EXPECT_EQ(kernel_names.count(n), 1u) << n;
  EXPECT_EQ(kernel_names.count("[kernel]"), 1u);
  EXPECT_GE(rep.kernel_frames_unsymbolized, 1u);  // the outside address
}

// Samples carry their goroutine's labels as string labels; the same stack under different label
// sets is different samples, as runtime/pprof writes them.
TEST(CpuProfileTest, SampleLabelsAreStringLabels) {
  const std::string dir = testing::MakeTempDir("cpu-profile-test");
  ProcessSymbolizer symbolizer;
  StackSample s;
  s.pid = s.tid = static_cast<uint32_t>(getpid());
  s.user_ips = {reinterpret_cast<uint64_t>(&CpuProfileTestLeaf) + 1};
  StackSample a = s, b = s;
  a.labels = std::make_shared<const SampleLabels>(SampleLabels{{"job", "x"}, {"worker", "a"}});
  b.labels = std::make_shared<const SampleLabels>(SampleLabels{{"job", "x"}, {"worker", "b"}});
  CpuProfileParams p;
  p.start = absl::Now();
  p.duration = absl::Seconds(1);
  auto gz = BuildCpuProfile({a, b, b, s}, p, &symbolizer, nullptr);
  ASSERT_TRUE(gz.ok()) << gz.status();
  std::ofstream(dir + "/p.pb.gz") << *gz;
  auto sum = testing::SummarizeProfile(dir + "/p.pb.gz");
  ASSERT_TRUE(sum.ok()) << sum.status();
  EXPECT_EQ(sum->samples.size(), 3u);
  using K = std::pair<std::string, std::string>;
  EXPECT_EQ(sum->labels, (std::map<K, int64_t>{
                             {K{"job", "x"}, 3}, {K{"worker", "a"}, 1}, {K{"worker", "b"}, 2}}));
}

}  // namespace
}  // namespace pprof_sidecar
