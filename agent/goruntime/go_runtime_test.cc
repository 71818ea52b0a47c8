// The per-release runtime layouts against each release's DWARF, and the census of the runtime's
// code (stripped binaries) against the symbol table, on real binaries of every Go of the matrix.
#include "agent/goruntime/go_runtime.h"

#include <map>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "agent/goprofile/contention_source.h"
#include "gtest/gtest.h"
#include "tests/testutil/testutil.h"

namespace pprof_sidecar {
namespace {

using ::pprof_sidecar::testing::BuildGo;
using ::pprof_sidecar::testing::GoCacheDir;
using ::pprof_sidecar::testing::GoTool;
using ::pprof_sidecar::testing::MakeTempDir;
using ::pprof_sidecar::testing::RunCommand;
using ::pprof_sidecar::testing::TestDataDir;

class GoRuntimeTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GoRuntimeTest, LayoutIsTheReleasesDwarf) {
  const std::string version = GetParam();
  const std::string dir = MakeTempDir("goruntime");
  auto bin = BuildGo(version, TestDataDir() + "/targets/go_goroutines", "", dir + "/target");
  ASSERT_TRUE(bin.ok()) << bin.status();
  auto go = GoTool(version);
  ASSERT_TRUE(go.ok()) << go.status();
  auto b = GoBinary::Open(*bin);
  ASSERT_TRUE(b.ok()) << b.status();
  auto l = (*b)->layout();
  ASSERT_TRUE(l.ok()) << l.status();
  const std::map<std::string, int> want = {
      {"runtime.g.size", l->g_size},
      {"runtime.g.m", l->g_m},
      {"runtime.g.sched", l->g_sched_sp},
      {"runtime.g.syscallsp", l->g_syscallsp},
      {"runtime.g.syscallpc", l->g_syscallpc},
      {"runtime.g.atomicstatus", l->g_atomicstatus},
      {"runtime.g.goid", l->g_goid},
      {"runtime.g.waitsince", l->g_waitsince},
      {"runtime.g.waitreason", l->g_waitreason},
      {"runtime.g.lockedm", l->g_lockedm},
      {"runtime.g.parentGoid", l->g_parent_goid},
      {"runtime.g.gopc", l->g_gopc},
      {"runtime.g.startpc", l->g_startpc},
      {"runtime.g.labels", l->g_labels},
      {"runtime.gobuf.pc", l->g_sched_pc - l->g_sched_sp},
      {"runtime.gobuf.bp", l->g_sched_bp - l->g_sched_sp},
      {"runtime.m.procid", l->m_procid},
      {"runtime.m.curg", l->m_curg},
      {"runtime.m.id", l->m_id},
      {"runtime.m.alllink", l->m_alllink},
      {"runtime.m.createstack", l->m_createstack},
  };
  std::string args;
  for (const auto& [k, v] : want) absl::StrAppend(&args, " ", k);
  auto r = RunCommand(absl::StrCat("cd ", TestDataDir(),
                                   "/tools/godwarfoffsets && GOCACHE=", GoCacheDir(version),
                                   " GO111MODULE=off ", *go, " run main.go ", *bin, args));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  int checked = 0;
  for (absl::string_view line : absl::StrSplit(r.output, '\n', absl::SkipEmpty())) {
    std::vector<std::string> kv = absl::StrSplit(line, ' ');
    int off = 0;
    if (kv.size() != 2 || !want.count(kv[0]) || !absl::SimpleAtoi(kv[1], &off)) continue;
    EXPECT_EQ(want.at(kv[0]), off) << "go" << version << " " << kv[0];
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(want.size())) << r.output;
}

// Stripped binaries have no symbol table: the census of the runtime functions must find exactly
// the addresses the symbol table names.
TEST_P(GoRuntimeTest, CensusMatchesSymtab) {
  const std::string version = GetParam();
  const std::string dir = MakeTempDir("goruntime");
  auto bin = BuildGo(version, TestDataDir() + "/targets/go_goroutines", "", dir + "/target");
  ASSERT_TRUE(bin.ok()) << bin.status();
  auto b = GoBinary::Open(*bin);
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_TRUE((*b)->sched_vars().ok()) << (*b)->sched_vars().status();
  EXPECT_EQ((*b)->sched_vars()->method, "symtab");
  std::vector<GoVarSpec> specs;
  for (const char* n : {"runtime.allglen", "runtime.allgptr", "runtime.allm"}) {
    specs.push_back({n});
  }
  const GoRuntimeVars& v = *(*b)->sched_vars();
  // The census through a copy without .symtab: strip it.
  auto r = RunCommand(absl::StrCat("strip -s -o ", dir, "/stripped ", *bin));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto s = GoBinary::Open(dir + "/stripped");
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_TRUE((*s)->sched_vars().ok()) << (*s)->sched_vars().status();
  EXPECT_EQ((*s)->sched_vars()->method, "code");
  EXPECT_EQ((*s)->sched_vars()->allglen, v.allglen);
  EXPECT_EQ((*s)->sched_vars()->allgptr, v.allgptr);
  EXPECT_EQ((*s)->sched_vars()->allm, v.allm);
  ASSERT_TRUE((*b)->finalizer_var().ok()) << (*b)->finalizer_var().status();
  ASSERT_TRUE((*s)->finalizer_var().ok()) << (*s)->finalizer_var().status();
  EXPECT_EQ(*(*s)->finalizer_var(), *(*b)->finalizer_var());
  for (ContentionKind k : {ContentionKind::kBlock, ContentionKind::kMutex}) {
    auto want = LocateContentionVars(**b, k);
    auto got = LocateContentionVars(**s, k);
    ASSERT_TRUE(want.ok() && got.ok()) << want.status() << got.status();
    EXPECT_EQ(*got, *want);
  }
}

INSTANTIATE_TEST_SUITE_P(GoVersions, GoRuntimeTest, ::testing::ValuesIn(testing::GoVersions()),
                         [](const auto& info) { return testing::GoVersionName(info.param); });

}  // namespace
}  // namespace pprof_sidecar
