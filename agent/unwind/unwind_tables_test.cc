// UnwindTableCache over this test process's own binaries (the test executable and the C
// library), opened by a real ProcessSymbolizer: tables are built once per binary and shared,
// follow the symbolizer's evictions, and stay bounded.
#include "agent/unwind/unwind_tables.h"

#include <unistd.h>

#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "agent/symbolize/proc_maps.h"
#include "gtest/gtest.h"

namespace pprof_sidecar {
namespace {

__attribute__((noinline)) uint64_t OwnCode() { return reinterpret_cast<uint64_t>(&OwnCode); }

// An address in the C library's code.
uint64_t LibcCode() {
  auto maps = ReadProcMaps(getpid());
  if (!maps.ok()) return 0;
  for (const MapEntry& m : *maps) {
    if (m.exec && m.IsFileBacked() && absl::StrContains(m.path, "libc.so")) return m.start;
  }
  return 0;
}

TEST(UnwindTableCacheTest, BuildsOncePerBinaryAndSharesAcrossSessions) {
  ProcessSymbolizer sym;
  UnwindTableCache cache;
  auto s1 = sym.NewSession(getpid());
  auto s2 = sym.NewSession(getpid());
  const ProcessSymbolizer::Session::CodeAt* c1 = s1->FindCode(OwnCode());
  ASSERT_NE(c1, nullptr);
  std::shared_ptr<const UnwindTables> t1 = cache.Get(*c1);
  ASSERT_NE(t1->cfi, nullptr) << "a C++ executable has .eh_frame";
  const ProcessSymbolizer::Session::CodeAt* c2 = s2->FindCode(OwnCode() + 1);
  ASSERT_NE(c2, nullptr);
  EXPECT_EQ(cache.Get(*c2), t1);
  EXPECT_EQ(cache.builds(), 1u);

  const uint64_t libc = LibcCode();
  ASSERT_NE(libc, 0u);
  const ProcessSymbolizer::Session::CodeAt* c3 = s1->FindCode(libc);
  ASSERT_NE(c3, nullptr);
  std::shared_ptr<const UnwindTables> t3 = cache.Get(*c3);
  EXPECT_NE(t3, t1);
  EXPECT_NE(t3->cfi, nullptr);
  EXPECT_EQ(cache.builds(), 2u);
  EXPECT_EQ(cache.size(), 2u);
}

TEST(UnwindTableCacheTest, DropsWhatTheSymbolizerLetGo) {
  ProcessSymbolizer::Options o;
  o.max_binaries = 1;
  ProcessSymbolizer sym(o);
  UnwindTableCache cache;
  std::shared_ptr<const UnwindTables> first;
  {
    auto s = sym.NewSession(getpid());
    const ProcessSymbolizer::Session::CodeAt* c = s->FindCode(OwnCode());
    ASSERT_NE(c, nullptr);
    first = cache.Get(*c);
  }
  // Opening the C library evicts the executable from the symbolizer; no session holds it.
  auto s = sym.NewSession(getpid());
  const ProcessSymbolizer::Session::CodeAt* c = s->FindCode(LibcCode());
  ASSERT_NE(c, nullptr);
  cache.Get(*c);
  EXPECT_EQ(cache.size(), 1u);
  // The executable, reopened by the symbolizer, gets new tables; the old ones stay valid for
  // their holder.
  const ProcessSymbolizer::Session::CodeAt* again = s->FindCode(OwnCode());
  ASSERT_NE(again, nullptr);
  std::shared_ptr<const UnwindTables> second = cache.Get(*again);
  EXPECT_NE(second, first);
  EXPECT_NE(first->cfi, nullptr);
  EXPECT_EQ(cache.builds(), 3u);
}

TEST(UnwindTableCacheTest, BoundedByMaxBinaries) {
  ProcessSymbolizer sym;
  UnwindTableCache cache(/*max_binaries=*/1);
  auto s = sym.NewSession(getpid());  // holds both binaries
  const ProcessSymbolizer::Session::CodeAt* own = s->FindCode(OwnCode());
  ASSERT_NE(own, nullptr);
  std::shared_ptr<const UnwindTables> t = cache.Get(*own);
  const ProcessSymbolizer::Session::CodeAt* libc = s->FindCode(LibcCode());
  ASSERT_NE(libc, nullptr);
  cache.Get(*libc);
  EXPECT_EQ(cache.size(), 1u);
  own = s->FindCode(OwnCode());
  ASSERT_NE(own, nullptr);
  EXPECT_NE(cache.Get(*own), t);  // evicted, rebuilt
  EXPECT_EQ(cache.builds(), 3u);
}

}  // namespace
}  // namespace pprof_sidecar
