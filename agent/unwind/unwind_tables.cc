#include "agent/unwind/unwind_tables.h"

namespace pprof_sidecar {

namespace {

std::shared_ptr<const UnwindTables> BuildTables(const ProcessSymbolizer::Session::CodeAt& code) {
  auto t = std::make_shared<UnwindTables>();
  t->binary = code.binary;
  auto cfi = CfiTable::FromElf(*code.elf, /*use_debug_frame=*/code.go == nullptr);
  if (cfi.ok()) t->cfi = *std::move(cfi);
  if (code.go != nullptr) {
    absl::StatusOr<GoCgoCall> cgo = FindGoCgoCall(*code.elf, *code.go);
    if (cgo.ok()) t->cgo = *cgo;
  }
  return t;
}

}  // namespace

std::shared_ptr<const UnwindTables> UnwindTableCache::Get(
    const ProcessSymbolizer::Session::CodeAt& code) {
  const Key key = code.binary.get();
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = by_key_.find(key);
    if (it != by_key_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);
      return it->second->second;
    }
  }
  // Built outside the lock: indexing a large binary's CFI takes milliseconds.
  std::shared_ptr<const UnwindTables> t = BuildTables(code);
  std::lock_guard<std::mutex> l(mu_);
  auto it = by_key_.find(key);
  if (it != by_key_.end()) return it->second->second;  // raced with another builder
  ++builds_;
  TrimLocked();
  lru_.emplace_front(key, t);
  by_key_[key] = lru_.begin();
  while (lru_.size() > max_binaries_) {
    by_key_.erase(lru_.back().first);
    lru_.pop_back();  // unwinders still holding the tables keep them alive
  }
  return t;
}

void UnwindTableCache::TrimLocked() {
  for (auto it = lru_.begin(); it != lru_.end();) {
    if (it->second->binary.use_count() == 1) {  // only these tables hold the binary
      by_key_.erase(it->first);
      it = lru_.erase(it);
    } else {
      ++it;
    }
  }
}

size_t UnwindTableCache::size() const {
  std::lock_guard<std::mutex> l(mu_);
  return lru_.size();
}

uint64_t UnwindTableCache::builds() const {
  std::lock_guard<std::mutex> l(mu_);
  return builds_;
}

}  // namespace pprof_sidecar
