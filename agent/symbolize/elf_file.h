// Read-only view of a 64-bit little-endian ELF file (x86-64). All parsing is bounds-checked: the
// file may come from a hostile container, so malformed input yields an error, never UB.
#ifndef PPROF_SIDECAR_AGENT_SYMBOLIZE_ELF_FILE_H_
#define PPROF_SIDECAR_AGENT_SYMBOLIZE_ELF_FILE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/symbolize/target_file.h"

namespace pprof_sidecar {

struct ElfSection {
  std::string name;
  uint32_t type = 0;    // SHT_*
  uint64_t flags = 0;   // SHF_*
  uint64_t addr = 0;    // virtual address (0 if not allocated)
  uint64_t offset = 0;  // file offset
  uint64_t size = 0;
  uint32_t link = 0;
  uint64_t entsize = 0;
};

struct ElfSegment {  // PT_LOAD only
  uint64_t vaddr = 0;
  uint64_t offset = 0;
  uint64_t filesz = 0;
  uint64_t memsz = 0;
  uint32_t flags = 0;  // PF_X | PF_W | PF_R
};

struct ElfSymbol {
  std::string name;  // raw (possibly mangled)
  uint64_t value = 0;
  uint64_t size = 0;
};

class ElfFile {
 public:
  // Maps the file read-only. The file is opened as a target's file (target_file.h: never
  // blocks, regular files of at most kMaxTargetFileBytes only). Errors carry the path and the
  // reason.
  static absl::StatusOr<std::unique_ptr<ElfFile>> Open(const std::string& path);
  // Maps an already opened file (the descriptor is not kept); `name` is used in errors.
  static absl::StatusOr<std::unique_ptr<ElfFile>> Open(const TargetFd& fd, const std::string& name);
  // Parses an in-memory image (tests, fuzzers). The object owns its copy.
  static absl::StatusOr<std::unique_ptr<ElfFile>> FromBytes(std::string bytes);

  ~ElfFile();
  ElfFile(const ElfFile&) = delete;
  ElfFile& operator=(const ElfFile&) = delete;

  absl::string_view data() const;  // the whole file
  uint16_t type() const;           // ET_EXEC, ET_DYN, ...
  const std::vector<ElfSection>& sections() const;
  const std::vector<ElfSegment>& load_segments() const;
  const ElfSection* FindSection(absl::string_view name) const;
  // Bytes of a section (empty for SHT_NOBITS or out-of-range sections).
  absl::string_view SectionData(const ElfSection& s) const;

  // GNU build id (NT_GNU_BUILD_ID) as lowercase hex; else the Go build id (.note.go.buildid)
  // as-is; else "".
  std::string BuildId() const;

  // Maps a file offset inside a PT_LOAD segment to its link-time virtual address.
  std::optional<uint64_t> FileOffsetToVaddr(uint64_t offset) const;
  // Maps a link-time virtual address to a file offset (for reading initialized data).
  std::optional<uint64_t> VaddrToFileOffset(uint64_t vaddr) const;

  // Function symbols (STT_FUNC, or STT_NOTYPE in executable sections) with non-zero value from
  // .symtab, or from .dynsym when .symtab is absent, sorted by value, deduplicated. Read anew on
  // each call (a large C++ binary has hundreds of thousands): callers keep what they need.
  std::vector<ElfSymbol> FunctionSymbols() const;
  // Any symbol (object or function) by exact name from .symtab/.dynsym.
  std::optional<ElfSymbol> FindSymbol(absl::string_view name) const;

  // Unmaps the file pages read so far from this process's page tables (MADV_DONTNEED on the
  // read-only private mapping): they stay in the page cache, where the target that maps the
  // same file keeps them anyway, and are faulted back in when read again, but no longer count
  // in this process's RSS. data() stays valid. No-op for FromBytes.
  void ReleasePages() const;

 private:
  ElfFile();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_SYMBOLIZE_ELF_FILE_H_
