// Per-process symbolization: maps a runtime address of a target process to the mapping that
// holds it and its source lines. For each binary it prefers Go's pclntab (names, file:line,
// inlines; present even in stripped Go binaries), then DWARF (C/C++ file:line and inlines),
// then ELF symbol tables (names only). Binaries are opened through /proc/PID/map_files or
// /proc/PID/root so a target in another mount namespace, or whose file was deleted or replaced
// after it started, is still read from the very inode it mapped.
#ifndef PPROF_SIDECAR_AGENT_SYMBOLIZE_PROCESS_SYMBOLIZER_H_
#define PPROF_SIDECAR_AGENT_SYMBOLIZE_PROCESS_SYMBOLIZER_H_

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "agent/symbolize/proc_maps.h"
#include "agent/symbolize/source_line.h"

namespace pprof_sidecar {

class Kallsyms;
class DwarfSymbolizer;
class ElfFile;
class GoPclntab;

// What a pprof Mapping needs.
struct MappingView {
  uint64_t start = 0, limit = 0, offset = 0;
  std::string path;  // as the target sees it
  std::string build_id;
  bool has_functions = false, has_filenames = false, has_line_numbers = false,
       has_inline_frames = false;
};

struct ResolvedFrame {
  int mapping = -1;   // index into Session::mappings(), -1 for none (kernel, unmapped)
  SourceLines lines;  // innermost first; empty when the address could not be symbolized
};

struct SymbolizerStats {
  uint64_t binaries_cached = 0;
  uint64_t binary_opens = 0;
  uint64_t binary_open_errors = 0;
  uint64_t frames_symbolized = 0;
  uint64_t frames_unsymbolized = 0;
  uint64_t kernel_frames_unsymbolized = 0;
};

class ProcessSymbolizer {
 public:
  struct Options {
    size_t max_binaries = 64;  // LRU bound on open binaries (each holds a read-only mmap)
    std::string kallsyms_path = "/proc/kallsyms";
  };
  ProcessSymbolizer();
  explicit ProcessSymbolizer(Options opts);
  ~ProcessSymbolizer();

  struct Binary;  // an opened, parsed ELF file with its symbol sources
  // A process's mappings at one moment, with the binaries opened for them so far held open:
  // a session made from it later (NewSession(pid, snapshot)) gives the same answers after the
  // process exec'd another program or unmapped them.
  struct MapsSnapshot;

  // The mappings of one process as of one profile. Not thread-safe; one per profile build.
  // DWARF opened for it is trimmed (DwarfSymbolizer::Trim) when the last session using it ends.
  class Session {
   public:
    ~Session();
    // `ip` is a sampled user address; `is_return_address` is true for all frames but the leaf,
    // so that the call instruction (ip - 1) is looked up.
    ResolvedFrame ResolveUser(uint64_t ip, bool is_return_address);
    ResolvedFrame ResolveKernel(uint64_t ip, bool is_return_address);
    // Mappings referenced so far by ResolveUser, in first-use order.
    const std::vector<MappingView>& mappings() const { return views_; }
    // Empty if /proc/PID/maps was read; else why not (the process exited, ...).
    const std::string& maps_error() const { return maps_error_; }
    // This session's mappings and the binaries it opened so far.
    std::shared_ptr<const MapsSnapshot> Snapshot() const;
    // True if `other` has the same file-backed mappings (what code lookups depend on).
    bool SameFileMappings(const Session& other) const;
    // Binaries opened so far (a snapshot taken earlier lacks those opened since).
    size_t binaries_opened() const { return binary_of_map_.size(); }

    // For unwinders: the cached binary mapped at user address `pc`. Null if `pc` is not in a
    // file-backed mapping of a readable ELF file. The pointer stays valid until the next call;
    // `binary` keeps elf and go valid for as long as it is held (the unwinder keys its per-binary
    // tables by it: agent/unwind/unwind_tables.h). Does not add to mappings().
    struct CodeAt {
      const ElfFile* elf = nullptr;
      const GoPclntab* go = nullptr;
      uint64_t bias = 0;  // runtime address - link-time address, for this mapping
      std::shared_ptr<const Binary> binary;
    };
    const CodeAt* FindCode(uint64_t pc);

    // ElfFile::ReleasePages for every binary this session has opened. Done by the destructor of
    // a session that resolved frames (a profile build); sessions kept for unwinding call it
    // after a burst of work (warming a target).
    void ReleasePages();

   private:
    friend class ProcessSymbolizer;
    // The binary's DWARF, opened on first use; this session counts as its user until it ends.
    const DwarfSymbolizer* Dwarf(const MapEntry& m, const std::shared_ptr<Binary>& b);
    // The steps of ResolveUser.
    // Index into maps_ of the mapping holding `pc`; maps_.size() if none.
    size_t MapIndexOf(uint64_t pc) const;
    // Index into views_ of maps_[idx]'s view, made (and its binary opened) on first use.
    int ViewOf(size_t idx);
    // Sets the empty *lines to `pc`'s source lines in maps_[idx] (whose view exists): from Go's
    // pclntab, else DWARF, else the ELF symbol tables; a [vdso]-like mapping is its own name.
    // False, *lines left empty, if none knows `pc`.
    bool SymbolizeInMap(size_t idx, uint64_t pc, SourceLines* lines);

    ProcessSymbolizer* owner_ = nullptr;
    pid_t pid_ = 0;
    std::vector<MapEntry> maps_;
    std::string maps_error_;
    std::map<size_t, int> view_of_map_;  // maps_ index -> views_ index
    std::map<size_t, std::shared_ptr<Binary>> binary_of_map_;
    size_t last_code_map_ = ~size_t{0};  // FindCode's last hit (maps_ index)
    CodeAt last_code_;
    std::vector<MappingView> views_;
    std::vector<std::shared_ptr<Binary>> dwarf_users_;  // binaries whose DWARF this session used
  };

  // Reads /proc/PID/maps now; if the process is gone, falls back to the last maps seen for it.
  std::unique_ptr<Session> NewSession(pid_t pid);
  // A session over a snapshot of pid's mappings (no /proc read); its binaries are used first.
  std::unique_ptr<Session> NewSession(pid_t pid, std::shared_ptr<const MapsSnapshot> snapshot);

  SymbolizerStats stats() const;

  // The kernel's symbols (/proc/kallsyms, loaded on first use); null if unreadable.
  const Kallsyms* kallsyms();
  // Why kallsyms() is null ("" when it is not).
  std::string kallsyms_error();

 private:
  std::shared_ptr<Binary> GetBinary(pid_t pid, const MapEntry& e);

  const Options opts_;
  mutable std::mutex mu_;
  // LRU of binaries keyed by "dev:inode:path".
  std::list<std::pair<std::string, std::shared_ptr<Binary>>> lru_;
  std::map<std::string, decltype(lru_)::iterator> by_key_;
  std::map<pid_t, std::vector<MapEntry>> last_maps_;  // bounded: only the newest few pids
  std::unique_ptr<Kallsyms> kallsyms_;
  bool kallsyms_tried_ = false;
  std::string kallsyms_error_;
  std::atomic<uint64_t> binary_opens_{0}, binary_open_errors_{0}, frames_symbolized_{0},
      frames_unsymbolized_{0}, kernel_frames_unsymbolized_{0};
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_SYMBOLIZE_PROCESS_SYMBOLIZER_H_
