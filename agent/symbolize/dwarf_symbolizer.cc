#include "agent/symbolize/dwarf_symbolizer.h"

#include <cxxabi.h>
#include <dwarf.h>
#include <elfutils/libdw.h>
#include <elfutils/libdwelf.h>
#include <errno.h>
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstdlib>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/symbolize/target_file.h"

namespace pprof_sidecar {
namespace {

// Caps that keep memory bounded on huge or hostile inputs.
constexpr size_t kMaxCuRanges = 4 << 20;      // CU address ranges kept in the index
constexpr size_t kMaxIndexedFuncs = 2 << 20;  // function ranges across all per-CU indexes
constexpr size_t kMaxCachedPcs = 1 << 12;     // memoized results, a few hundred bytes each
constexpr size_t kMaxUnits = 1 << 22;         // units walked in .debug_info
constexpr int kMaxScopeDepth = 64;            // nesting of blocks/inlined subroutines
constexpr int kMaxTypeNesting = 16;           // namespaces/classes around a subprogram
constexpr size_t kMaxRangesPerDie = 1 << 16;  // entries read from one DW_AT_ranges

std::string DemangleCxx(const char* name) {
  if (name == nullptr || strncmp(name, "_Z", 2) != 0) return name ? name : "";
  int status = 0;
  char* out = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  if (status != 0 || out == nullptr) {
    free(out);
    return name;
  }
  std::string s(out);
  free(out);
  return s;
}

std::string LibdwError() {
  const char* m = dwarf_errmsg(-1);
  return m ? m : "unknown libdw error";
}

std::string HexBytes(const void* p, size_t n) {
  static const char kHex[] = "0123456789abcdef";
  const auto* b = static_cast<const uint8_t*>(p);
  std::string s;
  s.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    s.push_back(kHex[b[i] >> 4]);
    s.push_back(kHex[b[i] & 15]);
  }
  return s;
}

std::string BuildIdPath(const std::string& root, const std::string& hex) {
  return absl::StrCat(root, "/usr/lib/debug/.build-id/", hex.substr(0, 2), "/", hex.substr(2),
                      ".debug");
}

std::string DirName(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// An open ELF file: fd plus libelf handle.
class ElfHandle {
 public:
  ElfHandle() = default;
  ~ElfHandle() { Reset(); }
  ElfHandle(ElfHandle&& o) noexcept : fd_(o.fd_), elf_(o.elf_) {
    o.fd_ = -1;
    o.elf_ = nullptr;
  }
  ElfHandle& operator=(ElfHandle&& o) noexcept {
    if (this != &o) {
      Reset();
      std::swap(fd_, o.fd_);
      std::swap(elf_, o.elf_);
    }
    return *this;
  }
  void Reset() {
    if (elf_ != nullptr) elf_end(elf_);
    if (fd_ >= 0) close(fd_);
    elf_ = nullptr;
    fd_ = -1;
  }

  // Opens `path` inside `root` (target_file.h: resolved within root, never blocking, regular
  // files of bounded size only); root "" means the agent's own filesystem.
  static absl::StatusOr<ElfHandle> Open(const std::string& root, const std::string& path) {
    static const bool kInit = elf_version(EV_CURRENT) != EV_NONE;
    if (!kInit) return absl::InternalError("libelf: elf_version failed");
    absl::StatusOr<TargetFd> fd =
        root.empty() ? OpenRegularFile(path) : OpenRegularFileInRoot(root, path);
    if (!fd.ok()) return fd.status();
    const std::string shown = root.empty() ? path : absl::StrCat(root, path);
    ElfHandle h;
    h.fd_ = fd->release();
    h.elf_ = elf_begin(h.fd_, ELF_C_READ_MMAP, nullptr);
    if (h.elf_ == nullptr || elf_kind(h.elf_) != ELF_K_ELF) {
      return absl::InvalidArgumentError(
          absl::StrCat(shown, ": not an ELF file: ", elf_errmsg(-1) ? elf_errmsg(-1) : ""));
    }
    return h;
  }

  Elf* elf() const { return elf_; }
  int fd() const { return fd_; }
  bool has_file() const { return fd_ >= 0; }

  // Frees the libelf handle (and whatever it decompressed) but keeps the file open, so that
  // Resume() reads the very same inode again.
  void Suspend() {
    if (elf_ != nullptr) elf_end(elf_);
    elf_ = nullptr;
  }
  bool Resume() {
    if (elf_ != nullptr) return true;
    if (fd_ < 0) return false;
    elf_ = elf_begin(fd_, ELF_C_READ_MMAP, nullptr);
    if (elf_ != nullptr && elf_kind(elf_) == ELF_K_ELF) return true;
    Suspend();
    return false;
  }

  // True if the file carries DWARF debug info (not just a NOBITS placeholder).
  bool HasDebugInfo() const {
    size_t shstrndx;
    if (elf_getshdrstrndx(elf_, &shstrndx) != 0) return false;
    Elf_Scn* scn = nullptr;
    size_t n = 0;
    while ((scn = elf_nextscn(elf_, scn)) != nullptr && ++n < (1u << 20)) {
      GElf_Shdr shdr;
      if (gelf_getshdr(scn, &shdr) == nullptr) continue;
      const char* name = elf_strptr(elf_, shstrndx, shdr.sh_name);
      if (name == nullptr || shdr.sh_type == SHT_NOBITS || shdr.sh_size == 0) continue;
      if (strcmp(name, ".debug_info") == 0 || strcmp(name, ".zdebug_info") == 0) return true;
    }
    return false;
  }

  std::string BuildId() const {
    const void* id = nullptr;
    ssize_t n = dwelf_elf_gnu_build_id(elf_, &id);
    if (n <= 0 || id == nullptr) return "";
    return HexBytes(id, static_cast<size_t>(n));
  }

 private:
  int fd_ = -1;
  Elf* elf_ = nullptr;
};

// The sections a lookup reads. Location lists, macros, call frames and name indexes are not.
bool IsLookupSection(const char* name) {
  static const char* const kNames[] = {".debug_info",        ".debug_abbrev",    ".debug_line",
                                       ".debug_line_str",    ".debug_str",       ".debug_ranges",
                                       ".debug_rnglists",    ".debug_aranges",   ".debug_addr",
                                       ".debug_str_offsets", ".gnu_debugaltlink"};
  for (const char* n : kNames) {
    if (strcmp(name, n) == 0) return true;
  }
  return false;
}

// Decompresses `chdr_size + compressed` bytes at `offset` of fd (an SHF_COMPRESSED section:
// Elf64_Chdr, then a zlib stream) into out[0, out_size), reading the file in chunks.
bool InflateSection(int fd, uint64_t offset, uint64_t size, char* out, uint64_t out_size) {
  z_stream z{};
  if (inflateInit(&z) != Z_OK) return false;
  std::vector<unsigned char> buf(64 << 10);
  uint64_t pos = offset + sizeof(Elf64_Chdr), end = offset + size;
  z.next_out = reinterpret_cast<Bytef*>(out);
  z.avail_out = static_cast<uInt>(out_size);
  int rc = Z_OK;
  while (rc == Z_OK && pos < end) {
    ssize_t n = pread(fd, buf.data(), std::min<uint64_t>(buf.size(), end - pos), pos);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    pos += static_cast<uint64_t>(n);
    z.next_in = buf.data();
    z.avail_in = static_cast<uInt>(n);
    while (z.avail_in > 0 && rc == Z_OK) rc = inflate(&z, Z_NO_FLUSH);
  }
  const bool ok = rc == Z_STREAM_END && z.total_out == out_size;
  inflateEnd(&z);
  return ok;
}

// An ELF image in memory holding only the lookup sections of a debug file whose DWARF sections
// are compressed (SHF_COMPRESSED, zlib: Debian's -dbg packages), decompressed. Given the file
// itself, libdw decompresses every DWARF section it knows into heap copies, reading the
// compressed bytes through the file mapping: ~17 MB resident for glibc's debug file, against
// ~8.5 MB here (one anonymous mapping, returned whole by the destructor; the file is read with
// pread, so its pages never count in the agent's RSS).
class DecompressedImage {
 public:
  // Null if `src` has no compressed lookup section (libdw then reads the file's own mapping,
  // touching only the pages a lookup needs) or the image cannot be built.
  static std::unique_ptr<DecompressedImage> Build(Elf* src, int fd) {
    size_t shstrndx, shnum;
    if (elf_getshdrstrndx(src, &shstrndx) != 0 || elf_getshdrnum(src, &shnum) != 0) return nullptr;
    struct Part {
      std::string name;
      GElf_Shdr shdr;
      uint64_t size;  // in the image
      bool compressed;
      uint64_t offset = 0;
    };
    std::vector<Part> parts;
    bool any_compressed = false;
    Elf_Scn* scn = nullptr;
    while ((scn = elf_nextscn(src, scn)) != nullptr && parts.size() < 64) {
      GElf_Shdr shdr;
      if (gelf_getshdr(scn, &shdr) == nullptr || shdr.sh_type == SHT_NOBITS) continue;
      const char* name = elf_strptr(src, shstrndx, shdr.sh_name);
      if (name == nullptr || !IsLookupSection(name)) continue;
      Part p{name, shdr, shdr.sh_size, (shdr.sh_flags & SHF_COMPRESSED) != 0};
      if (p.compressed) {
        Elf64_Chdr ch;
        if (shdr.sh_size < sizeof(ch) ||
            pread(fd, &ch, sizeof(ch), static_cast<off_t>(shdr.sh_offset)) != sizeof(ch) ||
            ch.ch_type != ELFCOMPRESS_ZLIB || ch.ch_size > (1ull << 32)) {
          return nullptr;  // not ours to handle: libdw will
        }
        p.size = ch.ch_size;
        any_compressed = true;
      }
      parts.push_back(std::move(p));
    }
    if (!any_compressed) return nullptr;

    // Layout: ELF header, section contents (8-aligned), section names, section headers.
    uint64_t off = sizeof(Elf64_Ehdr);
    std::string shstrtab(1, '\0');
    for (Part& p : parts) {
      off = (off + 7) & ~uint64_t{7};
      p.offset = off;
      off += p.size;
    }
    const uint64_t shstrtab_off = off;
    std::vector<uint32_t> name_offs;
    for (const Part& p : parts) {
      name_offs.push_back(static_cast<uint32_t>(shstrtab.size()));
      shstrtab.append(p.name).push_back('\0');
    }
    const uint32_t shstrtab_name = static_cast<uint32_t>(shstrtab.size());
    shstrtab.append(".shstrtab").push_back('\0');
    off = (shstrtab_off + shstrtab.size() + 7) & ~uint64_t{7};
    const uint64_t shoff = off;
    const size_t nsec = parts.size() + 2;  // null section, parts, .shstrtab
    const uint64_t len = shoff + nsec * sizeof(Elf64_Shdr);

    void* mem = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) return nullptr;
    std::unique_ptr<DecompressedImage> img(new DecompressedImage(mem, len));
    char* base = static_cast<char*>(mem);
    for (const Part& p : parts) {
      if (p.compressed) {
        if (!InflateSection(fd, p.shdr.sh_offset, p.shdr.sh_size, base + p.offset, p.size)) {
          return nullptr;
        }
      } else if (pread(fd, base + p.offset, p.size, static_cast<off_t>(p.shdr.sh_offset)) !=
                 static_cast<ssize_t>(p.size)) {
        return nullptr;
      }
    }
    memcpy(base + shstrtab_off, shstrtab.data(), shstrtab.size());

    GElf_Ehdr src_eh;
    if (gelf_getehdr(src, &src_eh) == nullptr) return nullptr;
    Elf64_Ehdr eh{};
    memcpy(eh.e_ident, ELFMAG, SELFMAG);
    eh.e_ident[EI_CLASS] = ELFCLASS64;
    eh.e_ident[EI_DATA] = ELFDATA2LSB;
    eh.e_ident[EI_VERSION] = EV_CURRENT;
    eh.e_type = src_eh.e_type;
    eh.e_machine = src_eh.e_machine;
    eh.e_version = EV_CURRENT;
    eh.e_ehsize = sizeof(Elf64_Ehdr);
    eh.e_shentsize = sizeof(Elf64_Shdr);
    eh.e_shoff = shoff;
    eh.e_shnum = static_cast<Elf64_Half>(nsec);
    eh.e_shstrndx = static_cast<Elf64_Half>(nsec - 1);
    memcpy(base, &eh, sizeof(eh));
    auto* sh = reinterpret_cast<Elf64_Shdr*>(base + shoff);
    for (size_t i = 0; i < parts.size(); ++i) {
      const Part& p = parts[i];
      Elf64_Shdr& d = sh[i + 1];
      d.sh_name = name_offs[i];
      d.sh_type = p.shdr.sh_type;
      d.sh_flags = p.shdr.sh_flags & ~static_cast<uint64_t>(SHF_COMPRESSED);
      d.sh_offset = p.offset;
      d.sh_size = p.size;
      d.sh_addralign = 1;
      d.sh_entsize = p.shdr.sh_entsize;
    }
    Elf64_Shdr& st = sh[nsec - 1];
    st.sh_name = shstrtab_name;
    st.sh_type = SHT_STRTAB;
    st.sh_offset = shstrtab_off;
    st.sh_size = shstrtab.size();
    st.sh_addralign = 1;

    img->elf_ = elf_memory(base, len);
    if (img->elf_ == nullptr || elf_kind(img->elf_) != ELF_K_ELF) return nullptr;
    return img;
  }

  ~DecompressedImage() {
    if (elf_ != nullptr) elf_end(elf_);
    munmap(mem_, len_);
  }
  Elf* elf() const { return elf_; }

 private:
  DecompressedImage(void* mem, size_t len) : mem_(mem), len_(len) {}
  void* mem_;
  size_t len_;
  Elf* elf_ = nullptr;
};

// dwarf_begin_elf on the compact image of `h`'s file when it has compressed DWARF (kept in
// *image), else on the file itself.
Dwarf* BeginDwarf(const ElfHandle& h, std::unique_ptr<DecompressedImage>* image) {
  *image = DecompressedImage::Build(h.elf(), h.fd());
  if (*image != nullptr) {
    if (Dwarf* d = dwarf_begin_elf((*image)->elf(), DWARF_C_READ, nullptr)) return d;
    image->reset();
  }
  return dwarf_begin_elf(h.elf(), DWARF_C_READ, nullptr);
}

struct Range {
  uint64_t low = 0;
  uint64_t high = 0;  // exclusive
  uint64_t ref = 0;   // CU index or DIE offset
  bool operator<(const Range& o) const { return low < o.low || (low == o.low && high < o.high); }
};

// Finds the range with the greatest low <= pc that contains pc (tolerates a little overlap).
const Range* FindRange(const std::vector<Range>& v, uint64_t pc) {
  auto it = std::upper_bound(v.begin(), v.end(), pc,
                             [](uint64_t a, const Range& r) { return a < r.low; });
  for (int back = 0; back < 16 && it != v.begin(); ++back) {
    --it;
    if (pc < it->high) return &*it;
  }
  return nullptr;
}

// Appends die's pc ranges (skipping empty ones and those at address 0, which GCC leaves for
// discarded COMDAT code).
void AppendRanges(Dwarf_Die* die, uint64_t ref, std::vector<Range>* out, size_t cap) {
  Dwarf_Addr base, start, end;
  ptrdiff_t off = 0;
  size_t n = 0;
  while ((off = dwarf_ranges(die, off, &base, &start, &end)) > 0 && n++ < kMaxRangesPerDie &&
         out->size() < cap) {
    if (start == 0 || end <= start) continue;
    out->push_back(Range{start, end, ref});
  }
}

bool IsTypeScope(int tag) {
  switch (tag) {
    case DW_TAG_namespace:
    case DW_TAG_class_type:
    case DW_TAG_structure_type:
    case DW_TAG_union_type:
    case DW_TAG_module:
    case DW_TAG_interface_type:
      return true;
    default:
      return false;
  }
}

bool IsCodeScope(int tag) {
  switch (tag) {
    case DW_TAG_inlined_subroutine:
    case DW_TAG_lexical_block:
    case DW_TAG_try_block:
    case DW_TAG_catch_block:
    case DW_TAG_with_stmt:
      return true;
    default:
      return false;
  }
}

const char* AttrString(Dwarf_Die* die, unsigned name) {
  Dwarf_Attribute attr;
  if (dwarf_attr_integrate(die, name, &attr) == nullptr) return nullptr;
  return dwarf_formstring(&attr);
}

// ELF function symbols, for physical functions whose DWARF has no linkage name.
struct FuncSym {
  uint64_t addr = 0;
  uint64_t size = 0;
  std::string name;
};

void ReadFuncSyms(Elf* elf, std::vector<FuncSym>* out) {
  constexpr size_t kMaxSyms = 1 << 22;
  for (Elf64_Word want : {SHT_SYMTAB, SHT_DYNSYM}) {
    Elf_Scn* scn = nullptr;
    size_t sections = 0;
    while ((scn = elf_nextscn(elf, scn)) != nullptr && ++sections < (1u << 20)) {
      GElf_Shdr shdr;
      if (gelf_getshdr(scn, &shdr) == nullptr || shdr.sh_type != want) continue;
      if (shdr.sh_type == SHT_NOBITS || shdr.sh_entsize == 0) continue;
      Elf_Data* data = elf_getdata(scn, nullptr);
      if (data == nullptr) continue;
      size_t n = data->d_size / sizeof(Elf64_Sym);
      if (gelf_getclass(elf) == ELFCLASS32) n = data->d_size / sizeof(Elf32_Sym);
      for (size_t i = 0; i < n && out->size() < kMaxSyms; ++i) {
        GElf_Sym sym;
        if (gelf_getsym(data, static_cast<int>(i), &sym) == nullptr) break;
        int type = GELF_ST_TYPE(sym.st_info);
        if ((type != STT_FUNC && type != STT_GNU_IFUNC) || sym.st_shndx == SHN_UNDEF ||
            sym.st_value == 0) {
          continue;
        }
        const char* name = elf_strptr(elf, shdr.sh_link, sym.st_name);
        if (name == nullptr || *name == '\0') continue;
        out->push_back(FuncSym{sym.st_value, sym.st_size, name});
      }
    }
    if (!out->empty()) return;  // prefer .symtab; .dynsym only if there is none
  }
}

}  // namespace

struct DwarfSymbolizer::State {
  ElfHandle main_elf;  // the profiled file when DWARF comes from a separate file
  ElfHandle elf;       // the file DWARF is read from
  ElfHandle alt_elf;   // dwz supplementary file, if any
  Dwarf* dwarf = nullptr;
  Dwarf* alt = nullptr;
  // What dwarf/alt read when their files' DWARF is compressed (see DecompressedImage).
  std::unique_ptr<DecompressedImage> image, alt_image;

  struct Cu {
    Dwarf_Off die_offset = 0;
    bool funcs_indexed = false;
    std::vector<Range> funcs;  // ref = subprogram DIE offset; sorted
  };
  bool cus_indexed = false;
  std::vector<Cu> cus;
  std::vector<Range> cu_ranges;  // ref = index into cus; sorted
  size_t indexed_funcs = 0;
  absl::flat_hash_map<uint64_t, SourceLines> cache;  // empty value = NotFound
  bool syms_loaded = false;
  std::vector<FuncSym> syms;  // sorted by addr (stable: symtab order among equals)

  ~State() { Suspend(); }

  // Frees the libdw/libelf handles (with the decompressed sections of a compressed debug file:
  // ~10 MB for glibc's), the per-CU function indexes and the symbol table; keeps the files open,
  // the CU index (DIE offsets stay valid) and the result cache.
  void Suspend();
  // Reopens what Suspend freed. False if the file no longer reads as DWARF.
  bool Resume();

  void IndexCus();
  const std::vector<Range>& Funcs(size_t cu_index);
  void IndexFuncs(Dwarf_Die* parent, int depth, std::vector<Range>* out);
  SourceLines Lookup(uint64_t pc);
  void FillFunction(Dwarf_Die* die, SourceLine* sl);
  const FuncSym* SymbolAt(uint64_t pc);
};

void DwarfSymbolizer::State::Suspend() {
  if (dwarf != nullptr) dwarf_end(dwarf);
  if (alt != nullptr) dwarf_end(alt);
  dwarf = alt = nullptr;
  image.reset();
  alt_image.reset();
  elf.Suspend();
  alt_elf.Suspend();
  main_elf.Suspend();
  for (Cu& c : cus) {
    c.funcs_indexed = false;
    std::vector<Range>().swap(c.funcs);
  }
  indexed_funcs = 0;
  syms_loaded = false;
  std::vector<FuncSym>().swap(syms);
}

bool DwarfSymbolizer::State::Resume() {
  if (dwarf != nullptr) return true;
  if (!elf.Resume()) return false;
  dwarf = BeginDwarf(elf, &image);
  if (dwarf == nullptr) return false;
  if (alt_elf.has_file() && alt_elf.Resume()) {
    alt = BeginDwarf(alt_elf, &alt_image);
    if (alt != nullptr) dwarf_setalt(dwarf, alt);
  }
  main_elf.Resume();
  return true;
}

const FuncSym* DwarfSymbolizer::State::SymbolAt(uint64_t pc) {
  if (!syms_loaded) {
    syms_loaded = true;
    ReadFuncSyms(elf.elf(), &syms);
    if (syms.empty() && main_elf.elf() != nullptr) ReadFuncSyms(main_elf.elf(), &syms);
    std::stable_sort(syms.begin(), syms.end(),
                     [](const FuncSym& a, const FuncSym& b) { return a.addr < b.addr; });
    syms.shrink_to_fit();
  }
  auto it = std::upper_bound(syms.begin(), syms.end(), pc,
                             [](uint64_t a, const FuncSym& s) { return a < s.addr; });
  if (it == syms.begin()) return nullptr;
  uint64_t addr = std::prev(it)->addr;
  // Among the symbols at that address (aliases), the first in symbol-table order that covers pc.
  auto first = std::lower_bound(syms.begin(), it, addr,
                                [](const FuncSym& s, uint64_t a) { return s.addr < a; });
  for (auto c = first; c != it; ++c) {
    if (c->size == 0 || pc - c->addr < c->size) return &*c;
  }
  return nullptr;
}

void DwarfSymbolizer::State::IndexCus() {
  cus_indexed = true;
  Dwarf_CU* cu = nullptr;
  Dwarf_CU* next = nullptr;
  Dwarf_Half version;
  uint8_t unit_type;
  Dwarf_Die cudie, subdie;
  size_t units = 0;
  while (units++ < kMaxUnits &&
         dwarf_get_units(dwarf, cu, &next, &version, &unit_type, &cudie, &subdie) == 0) {
    cu = next;
    if (unit_type != DW_UT_compile && unit_type != DW_UT_skeleton) continue;
    if (dwarf_tag(&cudie) != DW_TAG_compile_unit) continue;
    size_t idx = cus.size();
    cus.push_back(Cu{dwarf_dieoffset(&cudie), false, {}});
    size_t before = cu_ranges.size();
    AppendRanges(&cudie, idx, &cu_ranges, kMaxCuRanges);
    if (cu_ranges.size() == before) {
      // No CU-level ranges: fall back to the ranges of its functions.
      for (const Range& f : Funcs(idx)) {
        if (cu_ranges.size() >= kMaxCuRanges) break;
        cu_ranges.push_back(Range{f.low, f.high, idx});
      }
    }
  }
  std::sort(cu_ranges.begin(), cu_ranges.end());
}

void DwarfSymbolizer::State::IndexFuncs(Dwarf_Die* parent, int depth, std::vector<Range>* out) {
  if (depth > kMaxTypeNesting) return;
  Dwarf_Die child;
  if (dwarf_child(parent, &child) != 0) return;
  Dwarf_Off prev = 0;
  do {
    Dwarf_Off off = dwarf_dieoffset(&child);
    if (off <= prev) break;  // malformed sibling chain: never loop
    prev = off;
    int tag = dwarf_tag(&child);
    if (tag == DW_TAG_subprogram) {
      AppendRanges(&child, off, out, kMaxIndexedFuncs);
      // Nested functions (GNU C) are direct children of their parent.
      if (dwarf_haschildren(&child) > 0) IndexFuncs(&child, kMaxTypeNesting, out);
    } else if (IsTypeScope(tag) && depth < kMaxTypeNesting) {
      IndexFuncs(&child, depth + 1, out);
    }
  } while (out->size() < kMaxIndexedFuncs && dwarf_siblingof(&child, &child) == 0);
}

const std::vector<Range>& DwarfSymbolizer::State::Funcs(size_t cu_index) {
  Cu& cu = cus[cu_index];
  if (cu.funcs_indexed) return cu.funcs;
  if (indexed_funcs > kMaxIndexedFuncs) {
    // Bound memory: drop every per-CU index; they are rebuilt on demand.
    for (Cu& c : cus) {
      c.funcs_indexed = false;
      std::vector<Range>().swap(c.funcs);
    }
    indexed_funcs = 0;
  }
  cu.funcs_indexed = true;
  Dwarf_Die cudie;
  if (dwarf_offdie(dwarf, cu.die_offset, &cudie) != nullptr) {
    IndexFuncs(&cudie, 0, &cu.funcs);
    std::sort(cu.funcs.begin(), cu.funcs.end());
    cu.funcs.shrink_to_fit();
  }
  indexed_funcs += cu.funcs.size();
  return cu.funcs;
}

namespace {

// Appends to *chain the DW_TAG_inlined_subroutine DIEs inside `scope` that contain pc, outermost
// first. Returns true if pc was found inside some child scope.
bool Descend(Dwarf_Die* scope, uint64_t pc, int depth, std::vector<Dwarf_Die>* chain) {
  if (depth > kMaxScopeDepth) return false;
  Dwarf_Die child;
  if (dwarf_child(scope, &child) != 0) return false;
  Dwarf_Off prev = 0;
  do {
    Dwarf_Off off = dwarf_dieoffset(&child);
    if (off <= prev) break;
    prev = off;
    int tag = dwarf_tag(&child);
    if (!IsCodeScope(tag)) continue;
    int has = dwarf_haspc(&child, pc);
    if (has == 1) {
      if (tag == DW_TAG_inlined_subroutine) chain->push_back(child);
      Descend(&child, pc, depth + 1, chain);
      return true;
    }
    if (has == 0 && tag == DW_TAG_lexical_block && !dwarf_hasattr(&child, DW_AT_low_pc) &&
        !dwarf_hasattr(&child, DW_AT_ranges)) {
      // A block without its own ranges may still hold inlined code.
      size_t before = chain->size();
      if (Descend(&child, pc, depth + 1, chain) && chain->size() > before) return true;
      chain->resize(before);
    }
  } while (dwarf_siblingof(&child, &child) == 0);
  return false;
}

}  // namespace

void DwarfSymbolizer::State::FillFunction(Dwarf_Die* die, SourceLine* sl) {
  const char* linkage = AttrString(die, DW_AT_linkage_name);
  if (linkage == nullptr) linkage = AttrString(die, DW_AT_MIPS_linkage_name);
  const char* name = AttrString(die, DW_AT_name);
  if (linkage != nullptr) {
    sl->system_name = linkage;
    sl->function = DemangleCxx(linkage);
    if (sl->function == sl->system_name && name != nullptr && strncmp(linkage, "_Z", 2) == 0) {
      sl->function = name;  // undemanglable: fall back to the plain name
    }
  } else if (name != nullptr) {
    sl->function = sl->system_name = name;
  }
  int line = 0;
  if (dwarf_decl_line(die, &line) == 0 && line > 0) sl->start_line = line;
}

SourceLines DwarfSymbolizer::State::Lookup(uint64_t pc) {
  if (!cus_indexed) IndexCus();
  const Range* cr = FindRange(cu_ranges, pc);
  if (cr == nullptr) return {};
  size_t cu_index = cr->ref;
  Dwarf_Die cudie;
  if (dwarf_offdie(dwarf, cus[cu_index].die_offset, &cudie) == nullptr) return {};

  // The physical function and the inlined chain inside it, outermost first.
  std::vector<Dwarf_Die> chain;
  const Range* fr = FindRange(Funcs(cu_index), pc);
  if (fr != nullptr) {
    Dwarf_Die func;
    if (dwarf_offdie(dwarf, fr->ref, &func) != nullptr) {
      chain.push_back(func);
      Descend(&func, pc, 0, &chain);
    }
  }

  SourceLine inner;
  Dwarf_Line* row = dwarf_getsrc_die(&cudie, pc);
  if (row != nullptr) {
    const char* file = dwarf_linesrc(row, nullptr, nullptr);
    if (file != nullptr) inner.file = file;
    int line = 0;
    if (dwarf_lineno(row, &line) == 0 && line > 0) inner.line = line;
  }
  if (chain.empty()) {
    if (row == nullptr) return {};
    if (const FuncSym* fs = SymbolAt(pc)) {
      inner.system_name = fs->name;
      inner.function = DemangleCxx(fs->name.c_str());
    }
    return SourceLines{inner};
  }

  Dwarf_Files* files = nullptr;
  size_t nfiles = 0;
  if (dwarf_getsrcfiles(&cudie, &files, &nfiles) != 0) files = nullptr;

  SourceLines out;
  out.reserve(chain.size());
  for (size_t i = chain.size(); i-- > 0;) {
    SourceLine sl;
    if (i + 1 == chain.size()) {
      sl.file = inner.file;
      sl.line = inner.line;
    } else {
      // Call site of the inlined subroutine just inside this one.
      Dwarf_Die* callee = &chain[i + 1];
      Dwarf_Attribute attr;
      Dwarf_Word v;
      if (dwarf_attr(callee, DW_AT_call_line, &attr) != nullptr &&
          dwarf_formudata(&attr, &v) == 0) {
        sl.line = static_cast<int64_t>(v);
      }
      if (files != nullptr && dwarf_attr(callee, DW_AT_call_file, &attr) != nullptr &&
          dwarf_formudata(&attr, &v) == 0 && v < nfiles) {
        const char* f = dwarf_filesrc(files, v, nullptr, nullptr);
        if (f != nullptr) sl.file = f;
      }
    }
    FillFunction(&chain[i], &sl);
    if (i == 0 && sl.function == sl.system_name) {
      // No linkage name in DWARF (C, or C++ DIEs GCC left unqualified): like addr2line, name the
      // physical function after the ELF symbol covering pc, which is qualified and mangled.
      if (const FuncSym* fs = SymbolAt(pc)) {
        sl.system_name = fs->name;
        sl.function = DemangleCxx(fs->name.c_str());
      }
    }
    out.push_back(std::move(sl));
  }
  return out;
}

DwarfSymbolizer::DwarfSymbolizer(std::string path, std::string debug_file,
                                 std::unique_ptr<State> state)
    : path_(std::move(path)), debug_file_(std::move(debug_file)), state_(std::move(state)) {}

DwarfSymbolizer::~DwarfSymbolizer() = default;

absl::StatusOr<std::unique_ptr<DwarfSymbolizer>> DwarfSymbolizer::Open(
    const std::string& path, const std::string& debug_root, const std::string& target_path) {
  std::string root = debug_root;
  while (!root.empty() && root.back() == '/') root.pop_back();
  // Paths inside the root are absolute ("/usr/lib/debug/..."); shown as root + path.
  auto shown = [&root](const std::string& in_root) { return absl::StrCat(root, in_root); };

  absl::StatusOr<ElfHandle> main = ElfHandle::Open("", path);
  if (!main.ok()) return main.status();
  auto state = std::make_unique<State>();
  std::string debug_file;
  if (main->HasDebugInfo()) {
    debug_file = path;
    state->elf = std::move(*main);
  } else {
    std::string build_id = main->BuildId();
    std::vector<std::string> candidates;  // inside root
    if (build_id.size() >= 4) candidates.push_back(BuildIdPath("", build_id));
    GElf_Word crc = 0;
    const char* link = dwelf_elf_gnu_debuglink(main->elf(), &crc);
    if (link != nullptr && *link != '\0' && strchr(link, '/') == nullptr) {
      // The directory of the binary as the target sees it.
      std::string target_dir;
      if (!target_path.empty()) {
        target_dir = DirName(target_path);
      } else if (root.empty()) {
        target_dir = DirName(path);
      } else if (absl::StartsWith(path, root + "/")) {
        target_dir = DirName(path.substr(root.size()));
      }
      if (!target_dir.empty()) {
        candidates.push_back(absl::StrCat(target_dir, "/", link));
        candidates.push_back(absl::StrCat(target_dir, "/.debug/", link));
        if (absl::StartsWith(target_dir, "/")) {
          candidates.push_back(absl::StrCat("/usr/lib/debug", target_dir, "/", link));
        }
      }
    }
    std::vector<std::string> tried;
    for (const std::string& c : candidates) {
      if (shown(c) == path) continue;
      absl::StatusOr<ElfHandle> dbg = ElfHandle::Open(root, c);
      if (!dbg.ok()) {
        // Named in the error below: a FIFO, an escaping symlink or a huge file is skipped here.
        if (!absl::IsNotFound(dbg.status())) tried.push_back(std::string(dbg.status().message()));
        continue;
      }
      if (!dbg->HasDebugInfo()) continue;
      std::string dbg_id = dbg->BuildId();
      if (!build_id.empty() && !dbg_id.empty() && dbg_id != build_id) continue;
      debug_file = shown(c);
      state->elf = std::move(*dbg);
      state->main_elf = std::move(*main);
      break;
    }
    if (debug_file.empty()) {
      std::vector<std::string> looked;
      for (const std::string& c : candidates) looked.push_back(shown(c));
      return absl::NotFoundError(absl::StrCat(
          "no DWARF in ", path, build_id.empty() ? "" : absl::StrCat(" (build id ", build_id, ")"),
          looked.empty() ? "" : absl::StrCat("; looked in ", absl::StrJoin(looked, ", ")),
          tried.empty() ? "" : absl::StrCat("; refused: ", absl::StrJoin(tried, "; "))));
    }
  }

  state->dwarf = BeginDwarf(state->elf, &state->image);
  if (state->dwarf == nullptr) {
    return absl::DataLossError(absl::StrCat(debug_file, ": reading DWARF: ", LibdwError()));
  }

  // dwz supplementary file: look it up under debug_root by build id (or the recorded path).
  const char* alt_name = nullptr;
  const void* alt_id = nullptr;
  ssize_t alt_id_len = dwelf_dwarf_gnu_debugaltlink(state->dwarf, &alt_name, &alt_id);
  if (alt_id_len > 0 && alt_id != nullptr) {
    std::string want = HexBytes(alt_id, static_cast<size_t>(alt_id_len));
    std::vector<std::string> alts;  // inside root
    if (want.size() >= 4) alts.push_back(BuildIdPath("", want));
    if (alt_name != nullptr && *alt_name != '\0') {
      // A relative name is relative to the debug file's directory, as the target sees it.
      std::string debug_dir;
      if (root.empty()) {
        debug_dir = DirName(debug_file);
      } else if (absl::StartsWith(debug_file, root + "/")) {
        debug_dir = DirName(debug_file.substr(root.size()));
      } else if (!target_path.empty()) {
        debug_dir = DirName(target_path);
      }
      if (alt_name[0] == '/') {
        alts.push_back(alt_name);
      } else if (!debug_dir.empty()) {
        alts.push_back(absl::StrCat(debug_dir, "/", alt_name));
      }
    }
    for (const std::string& a : alts) {
      absl::StatusOr<ElfHandle> alt = ElfHandle::Open(root, a);
      if (!alt.ok() || alt->BuildId() != want) continue;
      std::unique_ptr<DecompressedImage> alt_image;
      Dwarf* d = BeginDwarf(*alt, &alt_image);
      if (d == nullptr) continue;
      state->alt_image = std::move(alt_image);
      state->alt_elf = std::move(*alt);
      state->alt = d;
      dwarf_setalt(state->dwarf, d);
      break;
    }
  }

  return std::unique_ptr<DwarfSymbolizer>(
      new DwarfSymbolizer(path, std::move(debug_file), std::move(state)));
}

absl::StatusOr<SourceLines> DwarfSymbolizer::Symbolize(uint64_t vaddr) const {
  absl::MutexLock lock(&mu_);
  State& s = *state_;
  auto it = s.cache.find(vaddr);
  if (it == s.cache.end()) {
    if (!s.Resume()) {
      return absl::DataLossError(
          absl::StrCat(debug_file_, ": reopening DWARF for 0x", absl::Hex(vaddr), " failed"));
    }
    if (s.cache.size() >= kMaxCachedPcs) s.cache.clear();
    it = s.cache.emplace(vaddr, s.Lookup(vaddr)).first;
  }
  if (it->second.empty()) {
    return absl::NotFoundError(
        absl::StrCat("no DWARF for address 0x", absl::Hex(vaddr), " in ", debug_file_));
  }
  return it->second;
}

void DwarfSymbolizer::Trim() {
  absl::MutexLock lock(&mu_);
  state_->Suspend();
}

}  // namespace pprof_sidecar
