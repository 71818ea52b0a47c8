#include "agent/symbolize/kallsyms.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace pprof_sidecar {

// Accumulates kallsyms lines, then packs them into a Kallsyms (Parse and the streaming Load
// share it). The lines are held as they come (16 bytes per symbol and the names) until Finish.
class Kallsyms::Builder {
 public:
  Builder() { modules_.emplace_back(); }

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
    if (f[2].size() > UINT16_MAX || names_.size() + f[2].size() > UINT32_MAX) return;
    Entry e;
    e.addr = addr;
    e.name_off = static_cast<uint32_t>(names_.size());
    e.name_len = static_cast<uint16_t>(f[2].size());
    e.module = 0;
    if (nf >= 4) {
      absl::string_view mod = f[3];
      if (absl::ConsumePrefix(&mod, "[") && absl::ConsumeSuffix(&mod, "]") && !mod.empty()) {
        auto it = module_index_.find(mod);
        if (it == module_index_.end()) {
          if (modules_.size() > UINT16_MAX) return;
          it =
              module_index_.emplace(std::string(mod), static_cast<uint16_t>(modules_.size())).first;
          modules_.emplace_back(mod);
        }
        e.module = it->second;
      }
    }
    names_.append(f[2].data(), f[2].size());
    entries_.push_back(e);
  }

  absl::StatusOr<std::unique_ptr<Kallsyms>> Finish() {
    if (entries_.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "kallsyms: no text symbol with a non-zero address (", text_syms_,
          " text symbols; addresses hidden by kernel.kptr_restrict or missing privileges?)"));
    }
    // Stable: among aliases at one address the first listed stays first.
    std::stable_sort(entries_.begin(), entries_.end(),
                     [](const Entry& a, const Entry& b) { return a.addr < b.addr; });
    auto k = std::make_unique<Kallsyms>();
    k->modules_ = std::move(modules_);
    k->addr_low_.reserve(entries_.size());
    z_stream z{};
    if (deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, -15, 9, Z_DEFAULT_STRATEGY) != Z_OK) {
      return absl::InternalError("kallsyms: deflateInit2 failed");
    }
    std::string block;
    for (size_t i = 0; i < entries_.size(); ++i) {
      const Entry& e = entries_[i];
      if (k->bases_.empty() || e.addr - k->bases_.back().second > UINT32_MAX) {
        k->bases_.emplace_back(i, e.addr);
      }
      k->addr_low_.push_back(static_cast<uint32_t>(e.addr - k->bases_.back().second));
      if (k->module_runs_.empty() || k->module_runs_.back().second != e.module) {
        k->module_runs_.emplace_back(i, e.module);
      }
      block.append(names_, e.name_off, e.name_len).push_back('\0');
      if ((i + 1) % kNamesPerBlock == 0 || i + 1 == entries_.size()) {
        if (!AppendBlock(block, &z, k.get())) {
          deflateEnd(&z);
          return absl::InternalError("kallsyms: deflate failed");
        }
        block.clear();
      }
    }
    deflateEnd(&z);
    k->block_offset_.push_back(static_cast<uint32_t>(k->blocks_.size()));
    k->blocks_.shrink_to_fit();
    k->bases_.shrink_to_fit();
    k->module_runs_.shrink_to_fit();
    return k;
  }

 private:
  struct Entry {
    uint64_t addr;
    uint32_t name_off;  // into names_
    uint16_t name_len;
    uint16_t module;  // index into modules_; 0: vmlinux ("")
  };

  // Deflates one block of names with `z` (raw deflate, reset after each block: one stream's
  // ~270 KB of state serves them all).
  static bool AppendBlock(const std::string& raw, z_stream* z, Kallsyms* k) {
    std::string out(deflateBound(z, raw.size()), '\0');
    z->next_in = reinterpret_cast<Bytef*>(const_cast<char*>(raw.data()));
    z->avail_in = static_cast<uInt>(raw.size());
    z->next_out = reinterpret_cast<Bytef*>(out.data());
    z->avail_out = static_cast<uInt>(out.size());
    const int rc = deflate(z, Z_FINISH);
    const size_t n = z->total_out;
    if (rc != Z_STREAM_END || deflateReset(z) != Z_OK || k->blocks_.size() + n > UINT32_MAX) {
      return false;
    }
    k->block_offset_.push_back(static_cast<uint32_t>(k->blocks_.size()));
    k->block_size_.push_back(static_cast<uint32_t>(raw.size()));
    k->blocks_.append(out.data(), n);
    return true;
  }

  std::vector<Entry> entries_;
  std::string names_;
  std::vector<std::string> modules_;
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

uint64_t Kallsyms::AddrAt(size_t i) const {
  auto it =
      std::upper_bound(bases_.begin(), bases_.end(), i,
                       [](size_t v, const std::pair<size_t, uint64_t>& b) { return v < b.first; });
  return std::prev(it)->second + addr_low_[i];  // bases_[0].first == 0
}

std::optional<Kallsyms::Symbol> Kallsyms::Lookup(uint64_t addr) const {
  // Last symbol <= addr.
  size_t lo = 0, hi = addr_low_.size();
  while (lo < hi) {
    const size_t mid = lo + (hi - lo) / 2;
    if (AddrAt(mid) <= addr) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  if (lo == 0) return std::nullopt;
  size_t i = lo - 1;
  // Among aliases at the same address, report the first listed (e.g. the kernel's own name
  // before later aliases).
  const uint64_t at = AddrAt(i);
  while (i > 0 && AddrAt(i - 1) == at) --i;

  const size_t block = i / kNamesPerBlock;
  std::string raw(block_size_[block], '\0');
  z_stream z{};
  if (inflateInit2(&z, -15) != Z_OK) return std::nullopt;
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(blocks_.data() + block_offset_[block]));
  z.avail_in = block_offset_[block + 1] - block_offset_[block];
  z.next_out = reinterpret_cast<Bytef*>(raw.data());
  z.avail_out = static_cast<uInt>(raw.size());
  const int rc = inflate(&z, Z_FINISH);
  inflateEnd(&z);
  if (rc != Z_STREAM_END) return std::nullopt;
  absl::string_view names = raw;
  for (size_t k = block * kNamesPerBlock; k < i; ++k) names.remove_prefix(names.find('\0') + 1);

  Symbol sym;
  sym.addr = at;
  sym.name = std::string(names.substr(0, names.find('\0')));
  auto run =
      std::upper_bound(module_runs_.begin(), module_runs_.end(), i,
                       [](size_t v, const std::pair<size_t, uint16_t>& r) { return v < r.first; });
  sym.module = modules_[std::prev(run)->second];
  return sym;
}

size_t Kallsyms::MemoryBytes() const {
  size_t n = addr_low_.capacity() * sizeof(uint32_t) + blocks_.capacity() +
             (block_offset_.capacity() + block_size_.capacity()) * sizeof(uint32_t) +
             bases_.capacity() * sizeof(bases_[0]) +
             module_runs_.capacity() * sizeof(module_runs_[0]);
  for (const std::string& m : modules_) n += sizeof(m) + m.capacity();
  return n;
}

}  // namespace pprof_sidecar
