#include "agent/symbolize/kallsyms.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace pprof_sidecar {

// Accumulates kallsyms lines into a Kallsyms (Parse and the streaming Load share it).
class Kallsyms::Builder {
 public:
  Builder() : k_(std::make_unique<Kallsyms>()) { k_->modules_.emplace_back(); }

  // "ffffffff81000000 T _stext" or "ffffffffc0a01000 t fn\t[module]"
  void AddLine(absl::string_view line) {
    absl::string_view f[4];
    size_t nf = 0;
    for (absl::string_view w : absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty())) {
      if (nf == 4) break;
      f[nf++] = w;
    }
    if (nf < 3 || f[1].size() != 1) return;
    char type = f[1][0];
    if (type != 't' && type != 'T' && type != 'w' && type != 'W') return;
    uint64_t addr;
    if (f[0].empty() || f[0].size() > 16 || !absl::SimpleHexAtoi(f[0], &addr)) return;
    ++text_syms_;
    if (addr == 0) return;
    if (f[2].size() > UINT16_MAX || k_->names_.size() + f[2].size() > UINT32_MAX) return;
    Entry e;
    e.addr = addr;
    e.name_off = static_cast<uint32_t>(k_->names_.size());
    e.name_len = static_cast<uint16_t>(f[2].size());
    e.module = 0;
    if (nf >= 4) {
      absl::string_view mod = f[3];
      if (absl::ConsumePrefix(&mod, "[") && absl::ConsumeSuffix(&mod, "]") && !mod.empty()) {
        auto it = module_index_.find(mod);
        if (it == module_index_.end()) {
          if (k_->modules_.size() > UINT16_MAX) return;
          it = module_index_.emplace(std::string(mod), static_cast<uint16_t>(k_->modules_.size()))
                   .first;
          k_->modules_.emplace_back(mod);
        }
        e.module = it->second;
      }
    }
    k_->names_.append(f[2].data(), f[2].size());
    k_->syms_.push_back(e);
  }

  absl::StatusOr<std::unique_ptr<Kallsyms>> Finish() {
    if (k_->syms_.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "kallsyms: no text symbol with a non-zero address (", text_syms_,
          " text symbols; addresses hidden by kernel.kptr_restrict or missing privileges?)"));
    }
    std::stable_sort(k_->syms_.begin(), k_->syms_.end(),
                     [](const Entry& a, const Entry& b) { return a.addr < b.addr; });
    k_->syms_.shrink_to_fit();
    k_->names_.shrink_to_fit();
    return std::move(k_);
  }

 private:
  std::unique_ptr<Kallsyms> k_;
  std::map<std::string, uint16_t, std::less<>> module_index_;  // a few hundred modules at most
  size_t text_syms_ = 0;
};

absl::StatusOr<std::unique_ptr<Kallsyms>> Kallsyms::Parse(absl::string_view text) {
  Builder b;
  for (absl::string_view line : absl::StrSplit(text, '\n')) b.AddLine(line);
  return b.Finish();
}

// Streams the file (~5 MB on a distribution kernel) a chunk at a time: holding all of it at once
// was the agent's peak resident memory.
absl::StatusOr<std::unique_ptr<Kallsyms>> Kallsyms::Load(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("open ", path));
  Builder b;
  std::string buf;
  size_t used = 0;
  buf.resize(1 << 16);
  while (true) {
    if (used == buf.size()) buf.resize(buf.size() * 2);  // a line longer than the buffer
    ssize_t n = read(fd, buf.data() + used, buf.size() - used);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      close(fd);
      return absl::ErrnoToStatus(err, absl::StrCat("read ", path));
    }
    if (n == 0) break;
    used += static_cast<size_t>(n);
    absl::string_view data(buf.data(), used);
    size_t start = 0;
    for (size_t nl; (nl = data.find('\n', start)) != absl::string_view::npos; start = nl + 1) {
      b.AddLine(data.substr(start, nl - start));
    }
    memmove(buf.data(), buf.data() + start, used - start);
    used -= start;
  }
  close(fd);
  if (used > 0) b.AddLine(absl::string_view(buf.data(), used));
  auto k = b.Finish();
  if (!k.ok()) {
    return absl::Status(k.status().code(), absl::StrCat(path, ": ", k.status().message()));
  }
  return k;
}

std::optional<Kallsyms::Symbol> Kallsyms::Lookup(uint64_t addr) const {
  auto it = std::upper_bound(syms_.begin(), syms_.end(), addr,
                             [](uint64_t a, const Entry& s) { return a < s.addr; });
  if (it == syms_.begin()) return std::nullopt;
  --it;
  // Among aliases at the same address, report the first listed (e.g. the kernel's own name
  // before later aliases).
  while (it != syms_.begin() && std::prev(it)->addr == it->addr) --it;
  Symbol sym;
  sym.addr = it->addr;
  sym.name.assign(names_, it->name_off, it->name_len);
  sym.module = modules_[it->module];
  return sym;
}

}  // namespace pprof_sidecar
