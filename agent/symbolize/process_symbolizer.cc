#include "agent/symbolize/process_symbolizer.h"

#include <algorithm>
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
  std::unique_ptr<ElfSymbolizer> syms;
  std::unique_ptr<DwarfSymbolizer> dwarf;
  std::string build_id;
  std::string error;  // non-empty: the file could not be read
  std::mutex aux_mu;  // guards aux (built lazily, once, by Session::FindCode)
  bool aux_built = false;
  std::shared_ptr<const void> aux;
};

namespace {
constexpr size_t kMaxRememberedPids = 16;
}  // namespace

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
  std::string path = TargetFilePath(pid, e);
  auto elf = ElfFile::Open(path);
  if (!elf.ok()) {
    b->error = std::string(elf.status().message());
    binary_open_errors_.fetch_add(1);
  } else {
    b->elf = *std::move(elf);
    b->build_id = b->elf->BuildId();
    auto go = GoPclntab::FromElf(*b->elf);
    if (go.ok()) b->go = *std::move(go);
    b->syms = std::make_unique<ElfSymbolizer>(*b->elf);
    if (!b->go) {
      auto dw = DwarfSymbolizer::Open(path, absl::StrCat("/proc/", pid, "/root"));
      if (dw.ok()) b->dwarf = *std::move(dw);
    }
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

ResolvedFrame ProcessSymbolizer::Session::ResolveUser(uint64_t ip, bool is_return_address) {
  ResolvedFrame out;
  const uint64_t pc = is_return_address && ip > 0 ? ip - 1 : ip;
  auto it = std::upper_bound(maps_.begin(), maps_.end(), pc,
                             [](uint64_t v, const MapEntry& m) { return v < m.start; });
  if (it == maps_.begin()) {
    owner_->frames_unsymbolized_.fetch_add(1);
    return out;
  }
  --it;
  if (pc >= it->end) {
    owner_->frames_unsymbolized_.fetch_add(1);
    return out;
  }
  const size_t idx = it - maps_.begin();
  const MapEntry& m = *it;
  auto vit = view_of_map_.find(idx);
  if (vit == view_of_map_.end()) {
    MappingView v;
    v.start = m.start;
    v.limit = m.end;
    v.offset = m.offset;
    v.path = m.path;
    if (m.IsFileBacked()) {
      auto b = owner_->GetBinary(pid_, m);
      binary_of_map_[idx] = b;
      if (b->elf) {
        v.build_id = b->build_id;
        v.has_functions = b->go || (b->syms && b->syms->size() > 0) || b->dwarf;
        v.has_filenames = v.has_line_numbers = b->go || b->dwarf;
        v.has_inline_frames = b->go || b->dwarf;
      }
    }
    vit = view_of_map_.emplace(idx, static_cast<int>(views_.size())).first;
    views_.push_back(std::move(v));
  }
  out.mapping = vit->second;

  auto bit = binary_of_map_.find(idx);
  const Binary* b = bit == binary_of_map_.end() ? nullptr : bit->second.get();
  if (b == nullptr || !b->elf) {
    if (!m.path.empty() && m.path[0] == '[') {  // [vdso], [vsyscall], ...
      out.lines.push_back(SourceLine{m.path, m.path, "", 0, 0});
      owner_->frames_symbolized_.fetch_add(1);
    } else {
      owner_->frames_unsymbolized_.fetch_add(1);
    }
    return out;
  }
  auto vaddr = b->elf->FileOffsetToVaddr(pc - m.start + m.offset);
  if (!vaddr) {
    owner_->frames_unsymbolized_.fetch_add(1);
    return out;
  }
  if (b->go && *vaddr >= b->go->min_pc() && *vaddr < b->go->max_pc()) {
    auto lines = b->go->Symbolize(*vaddr);
    if (lines.ok() && !lines->empty()) {
      out.lines = *std::move(lines);
      owner_->frames_symbolized_.fetch_add(1);
      return out;
    }
  }
  if (b->dwarf) {
    auto lines = b->dwarf->Symbolize(*vaddr);
    if (lines.ok() && !lines->empty()) {
      out.lines = *std::move(lines);
      owner_->frames_symbolized_.fetch_add(1);
      return out;
    }
  }
  if (b->syms) {
    auto line = b->syms->Lookup(*vaddr);
    if (line) {
      out.lines.push_back(*std::move(line));
      owner_->frames_symbolized_.fetch_add(1);
      return out;
    }
  }
  owner_->frames_unsymbolized_.fetch_add(1);
  return out;
}

bool ProcessSymbolizer::Session::FindCode(uint64_t pc, const AuxFactory& make_aux, CodeAt* out) {
  if (last_code_map_ < maps_.size() && pc >= maps_[last_code_map_].start &&
      pc < maps_[last_code_map_].end) {
    *out = last_code_;
    return last_code_.elf != nullptr;
  }
  auto it = std::upper_bound(maps_.begin(), maps_.end(), pc,
                             [](uint64_t v, const MapEntry& m) { return v < m.start; });
  if (it == maps_.begin()) return false;
  --it;
  if (pc >= it->end || !it->IsFileBacked()) return false;
  const size_t idx = it - maps_.begin();
  auto bit = binary_of_map_.find(idx);
  if (bit == binary_of_map_.end())
    bit = binary_of_map_.emplace(idx, owner_->GetBinary(pid_, *it)).first;
  Binary* b = bit->second.get();
  CodeAt c;
  if (b->elf) {
    auto vaddr = b->elf->FileOffsetToVaddr(pc - it->start + it->offset);
    if (vaddr) {
      c.elf = b->elf.get();
      c.go = b->go.get();
      c.bias = pc - *vaddr;
      std::lock_guard<std::mutex> l(b->aux_mu);
      if (!b->aux_built && make_aux) {
        b->aux_built = true;
        b->aux = make_aux(*b->elf, b->go.get());
      }
      c.aux = b->aux.get();
    }
  }
  last_code_map_ = idx;
  last_code_ = c;
  *out = c;
  return c.elf != nullptr;
}

const Kallsyms* ProcessSymbolizer::kallsyms() {
  std::lock_guard<std::mutex> l(mu_);
  if (!kallsyms_tried_) {
    kallsyms_tried_ = true;
    auto k = Kallsyms::Load(opts_.kallsyms_path);
    if (k.ok()) {
      kallsyms_ = *std::move(k);
    } else {
      fprintf(stderr, "pprof-sidecar: kernel frames will be unsymbolized: %s\n",
              std::string(k.status().message()).c_str());
    }
  }
  return kallsyms_.get();
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
