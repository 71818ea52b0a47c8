#include "agent/symbolize/process_symbolizer.h"

#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "agent/symbolize/dwarf_symbolizer.h"
#include "agent/symbolize/elf_file.h"
#include "agent/symbolize/elf_symbolizer.h"
#include "agent/symbolize/go_pclntab.h"
#include "agent/symbolize/kallsyms.h"

namespace pprof_sidecar {

struct ProcessSymbolizer::Binary {
  std::unique_ptr<ElfFile> elf;
  std::unique_ptr<GoPclntab> go;
  std::once_flag syms_once;  // the symbol table is read when a frame first needs it
  std::unique_ptr<ElfSymbolizer> syms;
  std::string build_id;
  std::string error;  // non-empty: the file could not be read
  // DWARF is opened when a sample first lands in the binary (Session::Dwarf), not with it: its
  // indexes (for a compressed debug file, the decompressed sections) are the largest thing the
  // agent would hold. Sessions using it count as users; the last one to end trims it.
  std::mutex dwarf_mu;  // guards the three below
  bool dwarf_tried = false;
  std::unique_ptr<DwarfSymbolizer> dwarf;  // set once, never reset
  int dwarf_users = 0;
};

struct ProcessSymbolizer::MapsSnapshot {
  std::vector<MapEntry> maps;
  std::map<size_t, std::shared_ptr<Binary>> binaries;  // maps index -> binary
};

namespace {
constexpr size_t kMaxRememberedPids = 16;

// Gives back the pages of this thread's stack below the caller's frame (minus a margin). libdw's
// line-table reader keeps ~130 KB of arrays on the stack: every thread that ever symbolized
// through DWARF (each of the HTTP server's workers builds profiles) would keep them resident.
// The pages are dead by the ABI; the next use faults in zeroed ones.
void ReleaseStackBelowCaller() {
  pthread_attr_t attr;
  if (pthread_getattr_np(pthread_self(), &attr) != 0) return;
  void* lo = nullptr;
  size_t size = 0;
  const int rc = pthread_attr_getstack(&attr, &lo, &size);
  pthread_attr_destroy(&attr);
  if (rc != 0) return;
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t here = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));
  const uintptr_t start = (reinterpret_cast<uintptr_t>(lo) + page - 1) & ~(page - 1);
  const uintptr_t end = (here - 16 * 1024) & ~(page - 1);
  if (here > reinterpret_cast<uintptr_t>(lo) + 16 * 1024 && end > start) {
    madvise(reinterpret_cast<void*>(start), end - start, MADV_DONTNEED);  // best effort
  }
}
}  // namespace

std::shared_ptr<const ProcessSymbolizer::MapsSnapshot> ProcessSymbolizer::Session::Snapshot()
    const {
  auto snap = std::make_shared<MapsSnapshot>();
  snap->maps = maps_;
  snap->binaries = binary_of_map_;
  return snap;
}

bool ProcessSymbolizer::Session::SameFileMappings(const Session& other) const {
  auto next_file = [](const std::vector<MapEntry>& v, size_t i) {
    while (i < v.size() && !v[i].IsFileBacked()) ++i;
    return i;
  };
  size_t i = next_file(maps_, 0), j = next_file(other.maps_, 0);
  while (i < maps_.size() && j < other.maps_.size()) {
    const MapEntry &a = maps_[i], &b = other.maps_[j];
    if (a.start != b.start || a.end != b.end || a.offset != b.offset || a.inode != b.inode ||
        a.dev_major != b.dev_major || a.dev_minor != b.dev_minor || a.path != b.path ||
        a.exec != b.exec) {
      return false;
    }
    i = next_file(maps_, i + 1);
    j = next_file(other.maps_, j + 1);
  }
  return i == maps_.size() && j == other.maps_.size();
}

std::unique_ptr<ProcessSymbolizer::Session> ProcessSymbolizer::NewSession(
    pid_t pid, std::shared_ptr<const MapsSnapshot> snapshot) {
  if (!snapshot) return NewSession(pid);
  auto s = std::make_unique<Session>();
  s->owner_ = this;
  s->pid_ = pid;
  s->maps_ = snapshot->maps;
  s->binary_of_map_ = snapshot->binaries;
  return s;
}

ProcessSymbolizer::ProcessSymbolizer() : ProcessSymbolizer(Options()) {}
ProcessSymbolizer::ProcessSymbolizer(Options opts) : opts_(std::move(opts)) {}
ProcessSymbolizer::~ProcessSymbolizer() = default;

std::unique_ptr<ProcessSymbolizer::Session> ProcessSymbolizer::NewSession(pid_t pid) {
  auto s = std::make_unique<Session>();
  s->owner_ = this;
  s->pid_ = pid;
  auto maps = ReadProcMaps(pid);
  std::lock_guard<std::mutex> l(mu_);
  if (maps.ok()) {
    s->maps_ = *maps;
    last_maps_[pid] = *std::move(maps);
    while (last_maps_.size() > kMaxRememberedPids) last_maps_.erase(last_maps_.begin());
  } else {
    s->maps_error_ = std::string(maps.status().message());
    auto it = last_maps_.find(pid);
    if (it != last_maps_.end()) s->maps_ = it->second;
  }
  return s;
}

std::shared_ptr<ProcessSymbolizer::Binary> ProcessSymbolizer::GetBinary(pid_t pid,
                                                                        const MapEntry& e) {
  std::string key = absl::StrCat(e.dev_major, ":", e.dev_minor, ":", e.inode, ":", e.path);
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = by_key_.find(key);
    if (it != by_key_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);
      return it->second->second;
    }
  }
  // Open outside the lock: parsing a large binary takes milliseconds.
  auto b = std::make_shared<Binary>();
  binary_opens_.fetch_add(1);
  absl::StatusOr<OpenedTargetFile> file = OpenTargetFile(pid, e);
  absl::StatusOr<std::unique_ptr<ElfFile>> elf =
      file.ok() ? ElfFile::Open(file->fd, file->path)
                : absl::StatusOr<std::unique_ptr<ElfFile>>(file.status());
  if (!elf.ok()) {
    b->error = std::string(elf.status().message());
    binary_open_errors_.fetch_add(1);
  } else {
    b->elf = *std::move(elf);
    b->build_id = b->elf->BuildId();
    auto go = GoPclntab::FromElf(*b->elf);
    if (go.ok()) b->go = *std::move(go);
  }
  std::lock_guard<std::mutex> l(mu_);
  auto it = by_key_.find(key);
  if (it != by_key_.end()) return it->second->second;  // raced with another opener
  lru_.emplace_front(key, b);
  by_key_[key] = lru_.begin();
  while (lru_.size() > opts_.max_binaries) {
    by_key_.erase(lru_.back().first);
    lru_.pop_back();  // sessions still holding it keep it alive
  }
  return b;
}

namespace {
const ElfSymbolizer* SymbolsOf(ProcessSymbolizer::Binary* b) {
  std::call_once(b->syms_once, [b] { b->syms = std::make_unique<ElfSymbolizer>(*b->elf); });
  return b->syms.get();
}
}  // namespace

ProcessSymbolizer::Session::~Session() {
  for (const std::shared_ptr<Binary>& b : dwarf_users_) {
    std::lock_guard<std::mutex> l(b->dwarf_mu);
    if (--b->dwarf_users == 0) b->dwarf->Trim();
  }
  // A session that symbolized (a profile build) has read its binaries' symbol tables, pclntab
  // and CFI through their file mappings, and maybe run libdw deep in this thread's stack.
  if (!views_.empty()) ReleasePages();
  if (!dwarf_users_.empty()) ReleaseStackBelowCaller();
}

void ProcessSymbolizer::Session::ReleasePages() {
  const Binary* last = nullptr;
  for (const auto& [idx, b] : binary_of_map_) {
    if (!b->elf || b.get() == last) continue;
    last = b.get();
    b->elf->ReleasePages();
  }
}

const DwarfSymbolizer* ProcessSymbolizer::Session::Dwarf(const MapEntry& m,
                                                         const std::shared_ptr<Binary>& b) {
  if (!b->elf || b->go) return nullptr;  // Go binaries: pclntab has it all
  std::lock_guard<std::mutex> l(b->dwarf_mu);
  if (!b->dwarf_tried) {
    b->dwarf_tried = true;
    // The file through a descriptor opened as a target file; its debug files inside the
    // target's root.
    absl::StatusOr<OpenedTargetFile> file = OpenTargetFile(pid_, m);
    if (file.ok()) {
      auto dw =
          DwarfSymbolizer::Open(file->fd.ProcPath(), absl::StrCat("/proc/", pid_, "/root"), m.path);
      if (dw.ok()) b->dwarf = *std::move(dw);
    }
  }
  if (b->dwarf == nullptr) return nullptr;
  if (std::find(dwarf_users_.begin(), dwarf_users_.end(), b) == dwarf_users_.end()) {
    dwarf_users_.push_back(b);
    ++b->dwarf_users;
  }
  return b->dwarf.get();
}

size_t ProcessSymbolizer::Session::MapIndexOf(uint64_t pc) const {
  auto it = std::upper_bound(maps_.begin(), maps_.end(), pc,
                             [](uint64_t v, const MapEntry& m) { return v < m.start; });
  if (it == maps_.begin()) return maps_.size();
  --it;
  if (pc >= it->end) return maps_.size();
  return it - maps_.begin();
}

int ProcessSymbolizer::Session::ViewOf(size_t idx) {
  auto vit = view_of_map_.find(idx);
  if (vit != view_of_map_.end()) return vit->second;
  const MapEntry& m = maps_[idx];
  MappingView v;
  v.start = m.start;
  v.limit = m.end;
  v.offset = m.offset;
  v.path = m.path;
  if (m.IsFileBacked()) {
    auto bit = binary_of_map_.find(idx);
    if (bit == binary_of_map_.end())
      bit = binary_of_map_.emplace(idx, owner_->GetBinary(pid_, m)).first;
    const std::shared_ptr<Binary>& b = bit->second;
    if (b->elf) {
      const bool dwarf = Dwarf(m, b) != nullptr;
      v.build_id = b->build_id;
      v.has_functions = b->go || dwarf || SymbolsOf(b.get())->size() > 0;
      v.has_filenames = v.has_line_numbers = b->go || dwarf;
      v.has_inline_frames = b->go || dwarf;
    }
  }
  vit = view_of_map_.emplace(idx, static_cast<int>(views_.size())).first;
  views_.push_back(std::move(v));
  return vit->second;
}

bool ProcessSymbolizer::Session::SymbolizeInMap(size_t idx, uint64_t pc, SourceLines* lines) {
  const MapEntry& m = maps_[idx];
  auto bit = binary_of_map_.find(idx);
  if (bit == binary_of_map_.end() || !bit->second->elf) {
    if (m.path.empty() || m.path[0] != '[') return false;
    lines->push_back(SourceLine{m.path, m.path, "", 0, 0});  // [vdso], [vsyscall], ...
    return true;
  }
  const std::shared_ptr<Binary>& b = bit->second;
  auto vaddr = b->elf->FileOffsetToVaddr(pc - m.start + m.offset);
  if (!vaddr) return false;
  if (b->go && *vaddr >= b->go->min_pc() && *vaddr < b->go->max_pc()) {
    auto go_lines = b->go->Symbolize(*vaddr);
    if (go_lines.ok() && !go_lines->empty()) {
      *lines = *std::move(go_lines);
      return true;
    }
  }
  if (const DwarfSymbolizer* dwarf = Dwarf(m, b)) {
    auto dwarf_lines = dwarf->Symbolize(*vaddr);
    if (dwarf_lines.ok() && !dwarf_lines->empty()) {
      *lines = *std::move(dwarf_lines);
      return true;
    }
  }
  if (const ElfSymbolizer* syms = SymbolsOf(b.get())) {
    auto line = syms->Lookup(*vaddr);
    if (line) {
      lines->push_back(*std::move(line));
      return true;
    }
  }
  return false;
}

ResolvedFrame ProcessSymbolizer::Session::ResolveUser(uint64_t ip, bool is_return_address) {
  ResolvedFrame out;
  const uint64_t pc = is_return_address && ip > 0 ? ip - 1 : ip;
  const size_t idx = MapIndexOf(pc);
  if (idx == maps_.size()) {
    owner_->frames_unsymbolized_.fetch_add(1);
    return out;
  }
  out.mapping = ViewOf(idx);
  if (SymbolizeInMap(idx, pc, &out.lines)) {
    owner_->frames_symbolized_.fetch_add(1);
  } else {
    owner_->frames_unsymbolized_.fetch_add(1);
  }
  return out;
}

const ProcessSymbolizer::Session::CodeAt* ProcessSymbolizer::Session::FindCode(uint64_t pc) {
  if (last_code_map_ < maps_.size() && pc >= maps_[last_code_map_].start &&
      pc < maps_[last_code_map_].end) {
    return last_code_.elf != nullptr ? &last_code_ : nullptr;
  }
  auto it = std::upper_bound(maps_.begin(), maps_.end(), pc,
                             [](uint64_t v, const MapEntry& m) { return v < m.start; });
  if (it == maps_.begin()) return nullptr;
  --it;
  if (pc >= it->end || !it->IsFileBacked()) return nullptr;
  const size_t idx = it - maps_.begin();
  auto bit = binary_of_map_.find(idx);
  if (bit == binary_of_map_.end())
    bit = binary_of_map_.emplace(idx, owner_->GetBinary(pid_, *it)).first;
  const std::shared_ptr<Binary>& b = bit->second;
  CodeAt c;
  if (b->elf) {
    auto vaddr = b->elf->FileOffsetToVaddr(pc - it->start + it->offset);
    if (vaddr) {
      c.elf = b->elf.get();
      c.go = b->go.get();
      c.bias = pc - *vaddr;
      c.binary = b;
    }
  }
  last_code_map_ = idx;
  last_code_ = std::move(c);
  return last_code_.elf != nullptr ? &last_code_ : nullptr;
}

const Kallsyms* ProcessSymbolizer::kallsyms() {
  std::lock_guard<std::mutex> l(mu_);
  if (!kallsyms_tried_) {
    kallsyms_tried_ = true;
    auto k = Kallsyms::Load(opts_.kallsyms_path);
    if (k.ok()) {
      kallsyms_ = *std::move(k);
    } else {
      kallsyms_error_ = std::string(k.status().message());
      fprintf(stderr, "pprof-sidecar: kernel frames will be shown as [kernel]: %s\n",
              kallsyms_error_.c_str());
    }
  }
  return kallsyms_.get();
}

std::string ProcessSymbolizer::kallsyms_error() {
  kallsyms();
  std::lock_guard<std::mutex> l(mu_);
  return kallsyms_error_;
}

ResolvedFrame ProcessSymbolizer::Session::ResolveKernel(uint64_t ip, bool is_return_address) {
  ResolvedFrame out;
  const Kallsyms* k = owner_->kallsyms();
  const uint64_t pc = is_return_address && ip > 0 ? ip - 1 : ip;
  if (k != nullptr) {
    if (auto s = k->Lookup(pc)) {
      std::string name = s->module.empty() ? s->name : absl::StrCat(s->name, " [", s->module, "]");
      out.lines.push_back(SourceLine{name, s->name, "", 0, 0});
      return out;
    }
  }
  owner_->kernel_frames_unsymbolized_.fetch_add(1);
  return out;
}

SymbolizerStats ProcessSymbolizer::stats() const {
  SymbolizerStats s;
  {
    std::lock_guard<std::mutex> l(mu_);
    s.binaries_cached = lru_.size();
  }
  s.binary_opens = binary_opens_.load();
  s.binary_open_errors = binary_open_errors_.load();
  s.frames_symbolized = frames_symbolized_.load();
  s.frames_unsymbolized = frames_unsymbolized_.load();
  s.kernel_frames_unsymbolized = kernel_frames_unsymbolized_.load();
  return s;
}

}  // namespace pprof_sidecar
