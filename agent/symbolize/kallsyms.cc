#include "agent/symbolize/kallsyms.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace pprof_sidecar {

absl::StatusOr<std::unique_ptr<Kallsyms>> Kallsyms::Parse(absl::string_view text) {
  auto k = std::make_unique<Kallsyms>();
  size_t text_syms = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    // "ffffffff81000000 T _stext" or "ffffffffc0a01000 t fn\t[module]"
    std::vector<absl::string_view> f =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (f.size() < 3 || f[1].size() != 1) continue;
    char type = f[1][0];
    if (type != 't' && type != 'T' && type != 'w' && type != 'W') continue;
    uint64_t addr;
    if (f[0].empty() || f[0].size() > 16 || !absl::SimpleHexAtoi(f[0], &addr)) continue;
    ++text_syms;
    if (addr == 0) continue;
    Symbol s;
    s.addr = addr;
    s.name = std::string(f[2]);
    if (f.size() >= 4) {
      absl::string_view mod = f[3];
      if (absl::ConsumePrefix(&mod, "[") && absl::ConsumeSuffix(&mod, "]")) {
        s.module = std::string(mod);
      }
    }
    k->syms_.push_back(std::move(s));
  }
  if (k->syms_.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "kallsyms: no text symbol with a non-zero address (", text_syms,
        " text symbols; addresses hidden by kernel.kptr_restrict or missing privileges?)"));
  }
  std::stable_sort(k->syms_.begin(), k->syms_.end(),
                   [](const Symbol& a, const Symbol& b) { return a.addr < b.addr; });
  return k;
}

absl::StatusOr<std::unique_ptr<Kallsyms>> Kallsyms::Load(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("open ", path));
  std::string text;
  std::string buf(1 << 16, '\0');
  while (true) {
    ssize_t n = read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      close(fd);
      return absl::ErrnoToStatus(err, absl::StrCat("read ", path));
    }
    if (n == 0) break;
    text.append(buf.data(), static_cast<size_t>(n));
  }
  close(fd);
  auto k = Parse(text);
  if (!k.ok()) {
    return absl::Status(k.status().code(), absl::StrCat(path, ": ", k.status().message()));
  }
  return k;
}

std::optional<Kallsyms::Symbol> Kallsyms::Lookup(uint64_t addr) const {
  auto it = std::upper_bound(syms_.begin(), syms_.end(), addr,
                             [](uint64_t a, const Symbol& s) { return a < s.addr; });
  if (it == syms_.begin()) return std::nullopt;
  --it;
  // Among aliases at the same address, report the first listed (e.g. the kernel's own name
  // before later aliases).
  while (it != syms_.begin() && std::prev(it)->addr == it->addr) --it;
  return *it;
}

}  // namespace pprof_sidecar
