#include "agent/heap/allocator_probes.h"

#include <elf.h>
#include <sys/stat.h>

#include <optional>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/symbolize/elf_file.h"
#include "agent/symbolize/x86_decode.h"

namespace pprof_sidecar {
namespace {

constexpr const char* kAllocatorFunctions[] = {"malloc",         "calloc",        "realloc",
                                               "posix_memalign", "aligned_alloc", "memalign",
                                               "valloc",         "pvalloc",       "free"};

constexpr int kRsp = 4;
// How far into a function a probe may move, in instructions.
constexpr int kMaxPrefixInsns = 12;

// What one instruction does, as far as PlaceEntryProbe needs to know.
struct InsnEffect {
  bool known = false;     // effects understood (else the walk stops)
  bool emulated = false;  // push/call/jmp/jcc/nop: the kernel emulates it
  bool branch = false;    // direct jmp/jcc/call with a target
  int64_t target = 0;     // its target, relative to the function's entry
  uint32_t writes = 0;    // registers written (bits by register number)
  int copy_from = -1;     // a 64-bit register-to-register mov: its source (writes = its dest)
};

// Classifies the instruction at `code[off]` (length `len`, already decoded).
InsnEffect Classify(absl::string_view code, size_t off, size_t len) {
  auto at = [&](size_t i) { return static_cast<uint8_t>(code[off + i]); };
  InsnEffect e;
  size_t i = 0;
  while (i < len &&
         (at(i) == 0x66 || at(i) == 0x64 || at(i) == 0x65 || at(i) == 0x2e || at(i) == 0x3e)) {
    ++i;
  }
  uint8_t rex = 0;
  if (i < len && (at(i) & 0xf0) == 0x40) rex = at(i++);
  if (i >= len) return e;
  const uint8_t op = at(i);
  auto rel = [&](size_t n) {  // signed displacement of the last n bytes
    int64_t v = 0;
    for (size_t k = 0; k < n; ++k) v |= static_cast<int64_t>(at(len - n + k)) << (8 * k);
    if (n == 1) v = static_cast<int8_t>(v);
    if (n == 4) v = static_cast<int32_t>(v);
    return static_cast<int64_t>(off + len) + v;
  };
  if ((op >= 0x50 && op <= 0x57) || op == 0x90) {  // push r64, nop
    e.known = e.emulated = true;
    return e;
  }
  if ((op >= 0x70 && op <= 0x7f) || op == 0xeb || op == 0xe9 || op == 0xe8) {
    e.known = e.emulated = e.branch = true;
    e.target = rel(op == 0xe9 || op == 0xe8 ? 4 : 1);
    return e;
  }
  if (op == 0x0f && i + 1 < len && at(i + 1) >= 0x80 && at(i + 1) <= 0x8f) {
    e.known = e.emulated = e.branch = true;
    e.target = rel(4);
    return e;
  }
  const bool two = op == 0x0f;
  const size_t mi = i + (two ? 2 : 1);  // ModRM index, when there is one
  if (two && mi > len) return e;
  const uint8_t op2 = two ? at(i + 1) : 0;
  const bool has_modrm = mi < len;
  const uint8_t modrm = has_modrm ? at(mi) : 0;
  const int mod = modrm >> 6, reg = ((modrm >> 3) & 7) | ((rex & 4) ? 8 : 0),
            rm = (modrm & 7) | ((rex & 1) ? 8 : 0);
  auto write_reg = [&](int r) { e.writes |= 1u << r; };
  auto write_rm = [&] {
    if (mod == 3) write_reg(rm);
  };
  e.known = true;
  if (two) {
    if (!has_modrm) {
      e.known = false;
      return e;
    }
    if (op2 == 0xb6 || op2 == 0xb7 || op2 == 0xbe || op2 == 0xbf || op2 == 0xaf ||
        (op2 >= 0x40 && op2 <= 0x4f)) {
      write_reg(reg);  // movzx, movsx, imul, cmovcc
    } else if (op2 == 0x1f) {
      // nopl: no effect
    } else {
      e.known = false;
    }
    return e;
  }
  if (op < 0x40 && (op & 7) < 6 && op != 0x0f) {  // add/or/adc/sbb/and/sub/xor/cmp
    const bool cmp = (op >> 3) == 7;
    if (cmp) return e;
    if ((op & 7) <= 1) {
      write_rm();
    } else if ((op & 7) <= 3) {
      write_reg(reg);
    } else {
      write_reg(0);  // al/eax imm
    }
    return e;
  }
  if (op == 0x84 || op == 0x85 || op == 0xa8 || op == 0xa9) return e;  // test
  if (op == 0x88 || op == 0x89) {                                      // mov r -> r/m
    write_rm();
    if (op == 0x89 && mod == 3 && (rex & 8)) e.copy_from = reg;
  } else if (op == 0x8a || op == 0x8b || op == 0x8d || op == 0x63) {  // mov r/m -> r, lea, movsxd
    write_reg(reg);
    if (op == 0x8b && mod == 3 && (rex & 8)) e.copy_from = rm;
  } else if (op >= 0xb8 && op <= 0xbf) {  // mov imm -> r
    write_reg((op & 7) | ((rex & 1) ? 8 : 0));
  } else if (op == 0x80 || op == 0x81 || op == 0x83) {  // ALU imm
    if (((modrm >> 3) & 7) != 7) write_rm();
  } else if (op == 0xc0 || op == 0xc1 || op == 0xd0 || op == 0xd1 || op == 0xd3 || op == 0xc6 ||
             op == 0xc7) {  // shifts, mov imm -> r/m
    write_rm();
  } else if (op == 0xf6 || op == 0xf7) {
    const int sub = (modrm >> 3) & 7;
    if (sub == 2 || sub == 3) write_rm();         // not, neg
    if (sub >= 4) e.writes |= 1u << 0 | 1u << 2;  // mul/imul/div/idiv: rax, rdx
  } else {
    e.known = false;
  }
  if (!has_modrm && op != 0xa8 && op != 0xa9 && !(op >= 0xb8 && op <= 0xbf)) e.known = false;
  return e;
}

// True if a direct branch anywhere in `code` lands in (0, limit]: the probe at `limit` would then
// not run exactly once per call with the return address at %rsp. False also when the walk
// cannot decode the whole function (unknown: not safe).
bool BranchesInto(absl::string_view code, size_t limit) {
  size_t off = 0;
  while (off < code.size()) {
    std::optional<X86Insn> in = DecodeX86(code, off);
    if (!in) {
      // Padding (int3, or zeros after the last instruction) ends the function's code.
      const uint8_t b = static_cast<uint8_t>(code[off]);
      return !(b == 0xcc || b == 0x00);
    }
    const InsnEffect e = Classify(code, off, in->length);
    if (e.branch && e.target > 0 && e.target <= static_cast<int64_t>(limit)) return true;
    off += in->length;
  }
  return false;
}

}  // namespace

uint32_t AllocatorArgRegs(absl::string_view f) {
  if (f == "malloc" || f == "free" || f == "valloc" || f == "pvalloc") return kRegRdi;
  if (f == "calloc" || f == "realloc" || f == "aligned_alloc" || f == "memalign") {
    return kRegRdi | kRegRsi;
  }
  if (f == "posix_memalign") return kRegRdi | kRegRsi | kRegRdx;
  return 0;
}

uint64_t ProbePlacement::ArgCookie() const {
  uint64_t c = 0;
  for (int i = 0; i < 3; ++i) {
    if (arg_reg[i] >= 0) c |= static_cast<uint64_t>(arg_reg[i] + 1) << (4 * i);
  }
  return c;
}

namespace {

constexpr int kAbiArgRegs[3] = {7, 6, 2};  // rdi, rsi, rdx

// The argument registers' locations while walking: a bit set of registers holding each.
struct ArgLocations {
  uint32_t where[3] = {0, 0, 0};  // 0: not needed

  explicit ArgLocations(uint32_t arg_regs) {
    for (int i = 0; i < 3; ++i) {
      if (arg_regs & (1u << kAbiArgRegs[i])) where[i] = 1u << kAbiArgRegs[i];
    }
  }
  // Applies one instruction; false if an argument is lost (or moved without `follow_moves`).
  bool Apply(const InsnEffect& e, bool follow_moves) {
    for (uint32_t& w : where) {
      if (w == 0) continue;
      const bool copy = e.copy_from >= 0 && (w & (1u << e.copy_from)) != 0;
      w &= ~e.writes;
      if (copy) w |= e.writes;
      if (w == 0) return false;
    }
    if (!follow_moves) {
      for (int i = 0; i < 3; ++i) {
        if (where[i] != 0 && (where[i] & (1u << kAbiArgRegs[i])) == 0) return false;
      }
    }
    return true;
  }
  void Fill(ProbePlacement* p) const {
    for (int i = 0; i < 3; ++i) {
      if (where[i] == 0 || (where[i] & (1u << kAbiArgRegs[i])) != 0) continue;
      p->arg_reg[i] = __builtin_ctz(where[i]);
    }
  }
};

}  // namespace

ProbePlacement PlaceEntryProbe(absl::string_view code, uint32_t arg_regs, bool follow_moves) {
  auto byte = [&](size_t i) { return i < code.size() ? static_cast<uint8_t>(code[i]) : 0; };
  ProbePlacement entry;
  if (byte(0) == 0xf3 && byte(1) == 0x0f && byte(2) == 0x1e && byte(3) == 0xfa) entry.offset = 4;
  size_t off = entry.offset;
  ArgLocations args(arg_regs);
  for (int n = 0; n < kMaxPrefixInsns && off < code.size(); ++n) {
    std::optional<X86Insn> in = DecodeX86(code, off);
    if (!in) break;
    const InsnEffect e = Classify(code, off, in->length);
    if (!e.known) break;
    if (e.emulated) {
      if (off != entry.offset && BranchesInto(code, off)) break;
      ProbePlacement p{off, true};
      args.Fill(&p);
      return p;
    }
    if ((e.writes & (1u << kRsp)) != 0 || !args.Apply(e, follow_moves)) break;
    off += in->length;
  }
  return entry;
}

bool IsAllocatorLibrary(absl::string_view path) {
  size_t slash = path.rfind('/');
  absl::string_view base = slash == absl::string_view::npos ? path : path.substr(slash + 1);
  return absl::StartsWith(base, "libc.so") || absl::StartsWith(base, "libc-") ||
         absl::StartsWith(base, "ld-musl-") || absl::StartsWith(base, "libjemalloc") ||
         absl::StartsWith(base, "libtcmalloc") || absl::StartsWith(base, "libmimalloc");
}

std::string AllocatorMappingsKey(pid_t pid, const std::vector<MapEntry>& maps) {
  struct stat exe_st;
  const bool have_exe = stat(absl::StrCat("/proc/", pid, "/exe").c_str(), &exe_st) == 0;
  std::string key;
  for (const MapEntry& e : maps) {
    if (!e.IsFileBacked() || !e.exec) continue;
    if (!(have_exe && e.inode == exe_st.st_ino) && !IsAllocatorLibrary(e.path)) continue;
    absl::StrAppend(&key, e.inode, ":", e.start, ":", e.path, "\n");
  }
  return key;
}

absl::StatusOr<std::vector<AllocatorProbe>> FindAllocatorProbes(pid_t pid,
                                                                const std::vector<MapEntry>& maps,
                                                                bool follow_moves) {
  struct stat exe_st;
  const bool have_exe = stat(absl::StrCat("/proc/", pid, "/exe").c_str(), &exe_st) == 0;
  std::vector<AllocatorProbe> out;
  std::set<std::pair<uint64_t, std::string>> seen;  // (inode, path)
  std::vector<std::string> skipped;
  for (const MapEntry& e : maps) {
    if (!e.IsFileBacked()) continue;
    const bool is_exe = have_exe && e.inode == exe_st.st_ino;
    if (!is_exe && !IsAllocatorLibrary(e.path)) continue;
    if (!seen.insert({e.inode, e.path}).second) continue;
    absl::StatusOr<OpenedTargetFile> file = OpenTargetFile(pid, e);
    if (!file.ok()) {
      skipped.push_back(std::string(file.status().message()));
      continue;
    }
    const std::string path = file->path;
    absl::StatusOr<std::unique_ptr<ElfFile>> elf = ElfFile::Open(file->fd, path);
    if (!elf.ok()) {
      skipped.push_back(std::string(elf.status().message()));
      continue;
    }
    auto opened = std::make_shared<const TargetFd>(std::move(file->fd));
    // Never probe Go code (return probes on Go functions crash the target).
    if ((*elf)->FindSection(".gopclntab") != nullptr ||
        (*elf)->FindSection(".go.buildinfo") != nullptr) {
      skipped.push_back(absl::StrCat(e.path, ": Go binary, not probed"));
      continue;
    }
    std::set<uint64_t> offsets;  // of this binary
    for (const char* fn : kAllocatorFunctions) {
      std::optional<ElfSymbol> sym = (*elf)->FindSymbol(fn);
      if (!sym || sym->value == 0) continue;
      for (const ElfSegment& s : (*elf)->load_segments()) {
        if ((s.flags & PF_X) == 0 || sym->value < s.vaddr || sym->value - s.vaddr >= s.filesz) {
          continue;
        }
        AllocatorProbe p;
        p.function = fn;
        p.binary = path;
        p.file = opened;
        p.mapped = e.path;
        p.inode = e.inode;
        p.file_offset = sym->value - s.vaddr + s.offset;
        for (const MapEntry& m : maps) {
          if (m.inode != e.inode || m.path != e.path || !m.exec || p.file_offset < m.offset ||
              p.file_offset - m.offset >= m.end - m.start) {
            continue;
          }
          p.runtime_start = m.start + (p.file_offset - m.offset);
          p.runtime_end = p.runtime_start + sym->size;
          break;
        }
        const absl::string_view data = (*elf)->data();
        if (p.file_offset < data.size()) {
          const size_t len = sym->size > 0 ? sym->size : 64;
          const ProbePlacement at = PlaceEntryProbe(data.substr(p.file_offset, len),
                                                    AllocatorArgRegs(p.function), follow_moves);
          p.file_offset += at.offset;
          p.skipped = static_cast<uint32_t>(at.offset);
          p.emulated = at.emulated;
          p.cookie = at.ArgCookie();
        }
        // Aliases (glibc's aligned_alloc is memalign): probe each address once.
        if (offsets.insert(p.file_offset).second) out.push_back(std::move(p));
        break;
      }
    }
  }
  if (out.empty()) {
    return absl::NotFoundError(absl::StrCat(
        "pid ", pid, ": no malloc implementation found in its executable or a mapped C library",
        skipped.empty() ? "" : absl::StrCat(" (", absl::StrJoin(skipped, "; "), ")")));
  }
  return out;
}

}  // namespace pprof_sidecar
