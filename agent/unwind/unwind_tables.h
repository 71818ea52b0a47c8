// The unwinder's per-binary tables (CFI, the cgo call bridge), built once per binary the
// symbolizer opened and shared by every SampleUnwinder given the same cache.
#ifndef PPROF_SIDECAR_AGENT_UNWIND_UNWIND_TABLES_H_
#define PPROF_SIDECAR_AGENT_UNWIND_UNWIND_TABLES_H_

#include <cstddef>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <utility>

#include "agent/symbolize/go_code.h"
#include "agent/symbolize/process_symbolizer.h"
#include "agent/unwind/cfi.h"

namespace pprof_sidecar {

// What the unwinder needs of a binary beyond its symbols.
struct UnwindTables {
  std::shared_ptr<const ProcessSymbolizer::Binary> binary;  // keeps the file the tables read
  std::unique_ptr<CfiTable> cfi;                            // null: no CFI
  GoCgoCall cgo;  // zero: not a cgo binary (or not understood)
};

// Tables keyed by the symbolizer's binary (its cache entry: device, inode, path, opened once).
// Bounded: at most `max_binaries` entries (least recently used go first), and a binary the
// symbolizer has let go (evicted, no session holding it) is dropped at the next build.
// Thread-safe.
class UnwindTableCache {
 public:
  explicit UnwindTableCache(size_t max_binaries = 64) : max_binaries_(max_binaries) {}

  // The tables of the binary holding `code` (from ProcessSymbolizer::Session::FindCode), built
  // on first use. Never null; `cfi` null and `cgo` zero when the binary has neither.
  std::shared_ptr<const UnwindTables> Get(const ProcessSymbolizer::Session::CodeAt& code);

  size_t size() const;
  uint64_t builds() const;  // tables built so far (a rebuilt binary counts again)

 private:
  using Key = const ProcessSymbolizer::Binary*;  // held by the entry: never reused while cached
  void TrimLocked();

  const size_t max_binaries_;
  mutable std::mutex mu_;
  std::list<std::pair<Key, std::shared_ptr<const UnwindTables>>> lru_;  // most recent first
  std::map<Key, decltype(lru_)::iterator> by_key_;
  uint64_t builds_ = 0;
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_UNWIND_UNWIND_TABLES_H_
