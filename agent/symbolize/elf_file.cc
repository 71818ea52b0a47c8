#include "agent/symbolize/elf_file.h"

#include <elf.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "agent/symbolize/target_file.h"

namespace pprof_sidecar {
namespace {

// Note type of Go's build id note (name "Go").
constexpr uint32_t kNtGoBuildId = 4;

// True if [off, off+len) lies within a buffer of `size` bytes, without overflow.
bool InRange(uint64_t off, uint64_t len, uint64_t size) { return off <= size && len <= size - off; }

// Copies a T at `off` (unaligned access safe). False if out of range.
template <typename T>
bool ReadAt(absl::string_view data, uint64_t off, T* out) {
  if (!InRange(off, sizeof(T), data.size())) return false;
  std::memcpy(out, data.data() + off, sizeof(T));
  return true;
}

// NUL-terminated string at `off` inside `table`; empty if out of range or unterminated.
absl::string_view StringAt(absl::string_view table, uint64_t off) {
  if (off >= table.size()) return {};
  absl::string_view rest = table.substr(off);
  size_t nul = rest.find('\0');
  if (nul == absl::string_view::npos) return {};
  return rest.substr(0, nul);
}

// Read-only private mapping of a whole file; unmapped on destruction.
class Mapping {
 public:
  Mapping(void* addr, size_t len) : addr_(addr), len_(len) {}
  ~Mapping() {
    if (addr_ != nullptr) munmap(addr_, len_);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  absl::string_view view() const { return {static_cast<const char*>(addr_), len_}; }
  void ReleasePages() const { madvise(addr_, len_, MADV_DONTNEED); }

 private:
  void* addr_;
  size_t len_;
};

struct RawSymbol {
  ElfSymbol sym;
  uint8_t bind = 0;
};

// Higher is a better representative among symbols sharing an address.
int Rank(const RawSymbol& s) {
  int r = 0;
  if (s.sym.size != 0) r += 4;
  if (s.bind == STB_GLOBAL) r += 2;
  if (s.bind == STB_WEAK) r += 1;
  return r;
}

}  // namespace

struct ElfFile::Impl {
  std::unique_ptr<Mapping> mapping;  // set by Open
  std::string bytes;                 // set by FromBytes
  absl::string_view data;
  Elf64_Ehdr ehdr{};
  std::vector<ElfSection> sections;
  std::vector<uint64_t> section_align;  // sh_addralign, parallel to sections
  std::vector<ElfSegment> loads;
  std::vector<Elf64_Phdr> notes;  // PT_NOTE program headers

  // Fills everything below from `data`; InvalidArgument with the reason if it is not a 64-bit
  // little-endian ELF file or a header table lies outside it.
  absl::Status Parse();
  // The steps of Parse.
  // Reads and checks ehdr (ELF magic, 64-bit, little-endian).
  absl::Status ParseHeader();
  // The section headers (the real count and string table index with extended numbering);
  // none if there is no section header table.
  absl::Status ReadSectionHeaders(std::vector<Elf64_Shdr>* shdrs, uint64_t* shstrndx) const;
  // Fills sections and section_align, named from the string table at shstrndx.
  void AddSections(const std::vector<Elf64_Shdr>& shdrs, uint64_t shstrndx);
  // Fills loads and notes (the real count with PN_XNUM is in shdrs[0]).
  absl::Status ParseProgramHeaders(const std::vector<Elf64_Shdr>& shdrs);
  absl::string_view SectionBytes(const ElfSection& s) const {
    if (s.type == SHT_NOBITS || !InRange(s.offset, s.size, data.size())) return {};
    return data.substr(s.offset, s.size);
  }
  // Calls fn(raw Elf64_Sym, name) for every entry of the symbol table section `symtab`.
  template <typename Fn>
  void ForEachSymbol(const ElfSection& symtab, Fn fn) const;
  const ElfSection* FirstOfType(uint32_t type) const {
    for (const auto& s : sections) {
      if (s.type == type) return &s;
    }
    return nullptr;
  }
  std::vector<ElfSymbol> BuildFunctionSymbols() const;
};

absl::Status ElfFile::Impl::Parse() {
  absl::Status s = ParseHeader();
  if (!s.ok()) return s;
  std::vector<Elf64_Shdr> shdrs;
  uint64_t shstrndx = 0;
  s = ReadSectionHeaders(&shdrs, &shstrndx);
  if (!s.ok()) return s;
  AddSections(shdrs, shstrndx);
  return ParseProgramHeaders(shdrs);
}

absl::Status ElfFile::Impl::ParseHeader() {
  if (!ReadAt(data, 0, &ehdr)) {
    return absl::InvalidArgumentError(
        absl::StrCat("file too small for an ELF header (", data.size(), " bytes)"));
  }
  if (std::memcmp(ehdr.e_ident, ELFMAG, SELFMAG) != 0) {
    return absl::InvalidArgumentError("not an ELF file (bad magic)");
  }
  if (ehdr.e_ident[EI_CLASS] != ELFCLASS64) {
    return absl::InvalidArgumentError("unsupported ELF class (only 64-bit)");
  }
  if (ehdr.e_ident[EI_DATA] != ELFDATA2LSB) {
    return absl::InvalidArgumentError("unsupported ELF byte order (only little-endian)");
  }
  return absl::OkStatus();
}

absl::Status ElfFile::Impl::ReadSectionHeaders(std::vector<Elf64_Shdr>* shdrs,
                                               uint64_t* shstrndx_out) const {
  // Extended numbering keeps the real count/index in section header 0.
  uint64_t shnum = ehdr.e_shnum;
  uint64_t shstrndx = ehdr.e_shstrndx;
  if (ehdr.e_shoff != 0) {
    if (ehdr.e_shentsize < sizeof(Elf64_Shdr)) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad section header entry size ", ehdr.e_shentsize));
    }
    Elf64_Shdr sh0;
    if (!ReadAt(data, ehdr.e_shoff, &sh0)) {
      return absl::InvalidArgumentError("section header table out of file bounds");
    }
    if (shnum == 0) shnum = sh0.sh_size;
    if (shstrndx == SHN_XINDEX) shstrndx = sh0.sh_link;
    if (shnum > data.size() / ehdr.e_shentsize ||
        !InRange(ehdr.e_shoff, shnum * ehdr.e_shentsize, data.size())) {
      return absl::InvalidArgumentError(
          absl::StrCat("section header table (", shnum, " entries) out of file bounds"));
    }
  } else {
    shnum = 0;
  }
  shdrs->resize(shnum);
  for (uint64_t i = 0; i < shnum; ++i) {
    ReadAt(data, ehdr.e_shoff + i * ehdr.e_shentsize, &(*shdrs)[i]);  // range checked above
  }
  *shstrndx_out = shstrndx;
  return absl::OkStatus();
}

void ElfFile::Impl::AddSections(const std::vector<Elf64_Shdr>& shdrs, uint64_t shstrndx) {
  absl::string_view shstrtab;
  if (shstrndx < shdrs.size()) {
    const Elf64_Shdr& s = shdrs[shstrndx];
    if (s.sh_type != SHT_NOBITS && InRange(s.sh_offset, s.sh_size, data.size())) {
      shstrtab = data.substr(s.sh_offset, s.sh_size);
    }
  }
  sections.reserve(shdrs.size());
  for (const Elf64_Shdr& s : shdrs) {
    ElfSection sec;
    sec.name = std::string(StringAt(shstrtab, s.sh_name));
    sec.type = s.sh_type;
    sec.flags = s.sh_flags;
    sec.addr = s.sh_addr;
    sec.offset = s.sh_offset;
    sec.size = s.sh_size;
    sec.link = s.sh_link;
    sec.entsize = s.sh_entsize;
    sections.push_back(std::move(sec));
    section_align.push_back(s.sh_addralign);
  }
}

absl::Status ElfFile::Impl::ParseProgramHeaders(const std::vector<Elf64_Shdr>& shdrs) {
  // With PN_XNUM the real count is section header 0's sh_info.
  uint64_t phnum = ehdr.e_phnum;
  if (phnum == PN_XNUM && !shdrs.empty()) phnum = shdrs[0].sh_info;
  if (ehdr.e_phoff == 0 || phnum == 0) return absl::OkStatus();
  if (ehdr.e_phentsize < sizeof(Elf64_Phdr)) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad program header entry size ", ehdr.e_phentsize));
  }
  if (phnum > data.size() / ehdr.e_phentsize ||
      !InRange(ehdr.e_phoff, phnum * ehdr.e_phentsize, data.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("program header table (", phnum, " entries) out of file bounds"));
  }
  for (uint64_t i = 0; i < phnum; ++i) {
    Elf64_Phdr ph;
    ReadAt(data, ehdr.e_phoff + i * ehdr.e_phentsize, &ph);
    if (ph.p_type == PT_LOAD) {
      ElfSegment seg;
      seg.vaddr = ph.p_vaddr;
      seg.offset = ph.p_offset;
      seg.filesz = ph.p_filesz;
      seg.memsz = ph.p_memsz;
      seg.flags = ph.p_flags;
      loads.push_back(seg);
    } else if (ph.p_type == PT_NOTE) {
      notes.push_back(ph);
    }
  }
  return absl::OkStatus();
}

template <typename Fn>
void ElfFile::Impl::ForEachSymbol(const ElfSection& symtab, Fn fn) const {
  absl::string_view syms = SectionBytes(symtab);
  absl::string_view strtab;
  if (symtab.link < sections.size()) strtab = SectionBytes(sections[symtab.link]);
  uint64_t entsize = symtab.entsize;
  if (entsize < sizeof(Elf64_Sym)) entsize = sizeof(Elf64_Sym);
  for (uint64_t off = 0; InRange(off, sizeof(Elf64_Sym), syms.size()); off += entsize) {
    Elf64_Sym sym;
    ReadAt(syms, off, &sym);
    fn(sym, StringAt(strtab, sym.st_name));
  }
}

std::vector<ElfSymbol> ElfFile::Impl::BuildFunctionSymbols() const {
  std::vector<ElfSymbol> func_syms;
  const ElfSection* symtab = FirstOfType(SHT_SYMTAB);
  if (symtab == nullptr) symtab = FirstOfType(SHT_DYNSYM);
  if (symtab == nullptr) return func_syms;
  std::vector<RawSymbol> raw;
  ForEachSymbol(*symtab, [&](const Elf64_Sym& s, absl::string_view name) {
    if (s.st_value == 0 || name.empty() || s.st_shndx == SHN_UNDEF) return;
    uint8_t type = ELF64_ST_TYPE(s.st_info);
    bool func = type == STT_FUNC || type == STT_GNU_IFUNC;
    if (!func && type == STT_NOTYPE) {
      func = s.st_shndx < sections.size() && (sections[s.st_shndx].flags & SHF_EXECINSTR) != 0;
    }
    if (!func) return;
    RawSymbol r;
    r.sym.name = std::string(name);
    r.sym.value = s.st_value;
    r.sym.size = s.st_size;
    r.bind = ELF64_ST_BIND(s.st_info);
    raw.push_back(std::move(r));
  });
  std::sort(raw.begin(), raw.end(), [](const RawSymbol& a, const RawSymbol& b) {
    if (a.sym.value != b.sym.value) return a.sym.value < b.sym.value;
    int ra = Rank(a), rb = Rank(b);
    if (ra != rb) return ra > rb;
    return a.sym.name < b.sym.name;  // deterministic
  });
  func_syms.reserve(raw.size());
  for (auto& r : raw) {
    if (!func_syms.empty() && func_syms.back().value == r.sym.value) continue;
    func_syms.push_back(std::move(r.sym));
  }
  return func_syms;
}

ElfFile::ElfFile() : impl_(std::make_unique<Impl>()) {}
ElfFile::~ElfFile() = default;

absl::StatusOr<std::unique_ptr<ElfFile>> ElfFile::Open(const std::string& path) {
  absl::StatusOr<TargetFd> fd = OpenRegularFile(path);
  if (!fd.ok()) return fd.status();
  return Open(*fd, path);
}

absl::StatusOr<std::unique_ptr<ElfFile>> ElfFile::Open(const TargetFd& fd,
                                                       const std::string& name) {
  if (fd.size() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": empty file"));
  }
  size_t len = static_cast<size_t>(fd.size());
  void* addr = mmap(nullptr, len, PROT_READ, MAP_PRIVATE, fd.get(), 0);
  if (addr == MAP_FAILED) {
    return absl::ErrnoToStatus(errno, absl::StrCat("mmap ", name));
  }
  std::unique_ptr<ElfFile> f(new ElfFile());
  f->impl_->mapping = std::make_unique<Mapping>(addr, len);
  f->impl_->data = f->impl_->mapping->view();
  absl::Status s = f->impl_->Parse();
  if (!s.ok()) {
    return absl::Status(s.code(), absl::StrCat(name, ": ", s.message()));
  }
  return f;
}

absl::StatusOr<std::unique_ptr<ElfFile>> ElfFile::FromBytes(std::string bytes) {
  std::unique_ptr<ElfFile> f(new ElfFile());
  f->impl_->bytes = std::move(bytes);
  f->impl_->data = f->impl_->bytes;
  absl::Status s = f->impl_->Parse();
  if (!s.ok()) return s;
  return f;
}

absl::string_view ElfFile::data() const { return impl_->data; }
uint16_t ElfFile::type() const { return impl_->ehdr.e_type; }
const std::vector<ElfSection>& ElfFile::sections() const { return impl_->sections; }
const std::vector<ElfSegment>& ElfFile::load_segments() const { return impl_->loads; }

const ElfSection* ElfFile::FindSection(absl::string_view name) const {
  for (const auto& s : impl_->sections) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

absl::string_view ElfFile::SectionData(const ElfSection& s) const { return impl_->SectionBytes(s); }

namespace {

// Walks the notes in `buf` (entries aligned to `align`), returning the descriptor of the first
// note with the given owner name and type.
std::optional<absl::string_view> FindNote(absl::string_view buf, uint64_t align,
                                          absl::string_view owner, uint32_t type) {
  if (align != 8) align = 4;
  auto round = [align](uint64_t v) { return (v + align - 1) & ~(align - 1); };
  uint64_t off = 0;
  while (true) {
    Elf64_Nhdr nh;  // same layout as Elf32_Nhdr: three 32-bit words
    if (!ReadAt(buf, off, &nh)) return std::nullopt;
    uint64_t name_off = off + sizeof(nh);
    uint64_t desc_off = name_off + round(nh.n_namesz);
    uint64_t next = desc_off + round(nh.n_descsz);
    if (!InRange(name_off, nh.n_namesz, buf.size()) ||
        !InRange(desc_off, nh.n_descsz, buf.size())) {
      return std::nullopt;
    }
    absl::string_view name = buf.substr(name_off, nh.n_namesz);
    while (!name.empty() && name.back() == '\0') name.remove_suffix(1);  // Go pads "Go\0\0"

    if (nh.n_type == type && name == owner) return buf.substr(desc_off, nh.n_descsz);
    if (next <= off) return std::nullopt;
    off = next;
  }
}

}  // namespace

std::string ElfFile::BuildId() const {
  const Impl& d = *impl_;
  // All note areas: PT_NOTE segments first, then SHT_NOTE sections (stripped-section files
  // still have segments; relocatable/odd files only sections).
  std::vector<std::pair<absl::string_view, uint64_t>> areas;
  for (const auto& ph : d.notes) {
    if (InRange(ph.p_offset, ph.p_filesz, d.data.size())) {
      areas.emplace_back(d.data.substr(ph.p_offset, ph.p_filesz), ph.p_align);
    }
  }
  for (const auto& s : d.sections) {
    if (s.type == SHT_NOTE) {
      areas.emplace_back(d.SectionBytes(s), d.section_align[&s - d.sections.data()]);
    }
  }
  for (const auto& [buf, align] : areas) {
    auto desc = FindNote(buf, align, "GNU", NT_GNU_BUILD_ID);
    if (desc.has_value() && !desc->empty()) {
      std::string hex;
      hex.reserve(desc->size() * 2);
      for (unsigned char c : *desc) absl::StrAppendFormat(&hex, "%02x", c);
      return hex;
    }
  }
  for (const auto& [buf, align] : areas) {
    auto desc = FindNote(buf, align, "Go", kNtGoBuildId);
    if (desc.has_value() && !desc->empty()) return std::string(*desc);
  }
  return "";
}

std::optional<uint64_t> ElfFile::FileOffsetToVaddr(uint64_t offset) const {
  for (const auto& seg : impl_->loads) {
    if (offset >= seg.offset && offset - seg.offset < seg.filesz) {
      return seg.vaddr + (offset - seg.offset);
    }
  }
  return std::nullopt;
}

std::optional<uint64_t> ElfFile::VaddrToFileOffset(uint64_t vaddr) const {
  for (const auto& seg : impl_->loads) {
    if (vaddr >= seg.vaddr && vaddr - seg.vaddr < seg.filesz) {
      return seg.offset + (vaddr - seg.vaddr);
    }
  }
  return std::nullopt;
}

std::vector<ElfSymbol> ElfFile::FunctionSymbols() const { return impl_->BuildFunctionSymbols(); }

void ElfFile::ReleasePages() const {
  if (impl_->mapping) impl_->mapping->ReleasePages();
}

std::optional<ElfSymbol> ElfFile::FindSymbol(absl::string_view name) const {
  for (uint32_t type : {SHT_SYMTAB, SHT_DYNSYM}) {
    for (const auto& sec : impl_->sections) {
      if (sec.type != type) continue;
      std::optional<ElfSymbol> found;
      impl_->ForEachSymbol(sec, [&](const Elf64_Sym& s, absl::string_view n) {
        if (found.has_value() || s.st_shndx == SHN_UNDEF || n != name) return;
        found = ElfSymbol{std::string(n), s.st_value, s.st_size};
      });
      if (found.has_value()) return found;
    }
  }
  return std::nullopt;
}

}  // namespace pprof_sidecar
