// What the agent knows of a Go binary's runtime: its release, the struct layouts of that release
// (runtime.g, runtime.m, runtime.bucket), the addresses of the runtime variables the profiles
// read (runtime.allglen/allgptr, runtime.allm, the block/mutex bucket lists and rates), the wait
// reason and status strings of that release, and the load bias of a running instance.
//
// Layouts are per Go minor release (1.19..1.27), taken from each release's DWARF
// (tests/tools/godwarfoffsets checks them against real binaries); a release outside that range
// has none and the profiles that need it say so. Variables are located by go_vars.h (symtab,
// else the census of the runtime functions that use them: stripped binaries).
#ifndef PPROF_SIDECAR_AGENT_GORUNTIME_GO_RUNTIME_H_
#define PPROF_SIDECAR_AGENT_GORUNTIME_GO_RUNTIME_H_

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/goruntime/go_heap_vars.h"
#include "agent/goruntime/go_vars.h"
#include "agent/goruntime/process_memory.h"
#include "agent/symbolize/elf_file.h"
#include "agent/symbolize/go_pclntab.h"

namespace pprof_sidecar {

// Byte offsets of the fields the agent reads (-1: the field does not exist in that release).
struct GoLayout {
  int minor = 0;
  // runtime.g
  int g_size = 0, g_stack_lo = 0, g_stack_hi = 8, g_m = 0, g_sched_sp = 0, g_sched_pc = 0,
      g_sched_bp = 0, g_syscallsp = 0, g_syscallpc = 0, g_atomicstatus = 0, g_goid = 0,
      g_waitsince = 0, g_waitreason = 0, g_lockedm = 0, g_parent_goid = -1, g_gopc = 0,
      g_startpc = 0, g_labels = 0;
  int g_running_cleanups = -1;  // atomic.Bool, 1.25+
  // runtime.m
  int m_procid = 0, m_curg = 0, m_id = 0, m_alllink = 0, m_createstack = 0;
  int m_createstack_len = 32;
};

// nullptr for releases the agent has no layout for.
const GoLayout* GoLayoutFor(int minor);

// runtime status values (runtime2.go), stable across 1.19..1.27.
enum GoStatus : uint32_t {
  kGidle = 0,
  kGrunnable = 1,
  kGrunning = 2,
  kGsyscall = 3,
  kGwaiting = 4,
  kGdead = 6,
  kGcopystack = 8,
  kGpreempted = 9,
  kGleaked = 10,     // 1.26+
  kGdeadextra = 11,  // 1.26+
  kGscan = 0x1000,
};

// Runtime variables, link-time addresses (0: not located).
struct GoRuntimeVars {
  uint64_t allglen = 0, allgptr = 0, allm = 0;
  uint64_t bbuckets = 0, xbuckets = 0, blockprofilerate = 0, mutexprofilerate = 0;
  std::string method;  // "symtab" or "code"
};

// One Go executable (shared by every process running it). The runtime variables are located on
// first use; the file pages read for that (and by Open) are then dropped from the agent's RSS.
class GoBinary {
 public:
  // NotFound if `path` is not a Go binary; other errors name the release and what is missing.
  static absl::StatusOr<std::shared_ptr<const GoBinary>> Open(const std::string& path);
  // As Open, for an opened file. `go_version` (if not null) gets the release its build info
  // names ("" if none), also when the binary cannot be read (FailedPrecondition naming it).
  static absl::StatusOr<std::shared_ptr<const GoBinary>> FromElf(std::unique_ptr<ElfFile> elf,
                                                                 std::string* go_version);

  const ElfFile& elf() const { return *elf_; }
  const GoPclntab& pcln() const { return *pcln_; }
  const std::string& go_version() const { return go_version_; }  // "go1.27.4", "" if unknown
  int minor() const { return minor_; }
  bool pie() const { return pie_; }
  // The layout of this release; an error naming the release if there is none.
  absl::StatusOr<GoLayout> layout() const;
  // The goroutine/thread variables (allglen, allgptr, allm); error if they could not be located.
  const absl::StatusOr<GoRuntimeVars>& sched_vars() const;
  // The heap profile's variables (go_heap_vars.h: LocateGoHeapVars); `located_now` (if not null)
  // is set when this call located them (the first one).
  const absl::StatusOr<GoHeapVars>& heap_vars(bool* located_now = nullptr) const;
  // runtime.waitReason.String() / gStatusStrings of this release ("???" out of range, as Go).
  std::string WaitReason(uint8_t reason) const;
  std::string StatusString(uint32_t status) const;
  // funcID of runtime.main, runtime.goexit etc. by name (the numbering moved across releases).
  // The finalizer goroutine (runtime.runfinq) counts as a system goroutine here; see
  // IsFinalizerGoroutineStart.
  bool IsSystemGoroutineStart(uint64_t startpc) const;
  // Whether `startpc` starts the finalizer goroutine (runtime.runfinq; runtime.runFinalizers
  // since 1.25), which Go counts as a user goroutine only while it runs a finalizer
  // (isSystemGoroutine).
  bool IsFinalizerGoroutineStart(uint64_t startpc) const;
  // Whether `startpc` starts a cleanup goroutine (runtime.runCleanups, 1.25+), which Go counts as
  // a user goroutine only while it runs cleanups (g.runningCleanups).
  bool IsCleanupGoroutineStart(uint64_t startpc) const;
  // Whether the finalizer goroutine runs a finalizer now (runtime.fingStatus's
  // fingRunningFinalizer bit, Go 1.20+; runtime.fingRunning in 1.19); an error if the variable
  // could not be located in this binary.
  absl::StatusOr<bool> FinalizerRunning(MemoryReader& mem, uint64_t bias) const;
  // runtime.fingStatus / runtime.fingRunning, link-time; an error if not located.
  const absl::StatusOr<uint64_t>& finalizer_var() const;
  // Drops the binary's file pages read so far from the agent's RSS (ElfFile::ReleasePages).
  void ReleasePages() const { elf_->ReleasePages(); }

 private:
  GoBinary() = default;
  std::unique_ptr<ElfFile> elf_;
  std::unique_ptr<GoPclntab> pcln_;
  std::string go_version_;
  int minor_ = 0;
  bool pie_ = false;
  const std::vector<std::string>* wait_reasons_ = nullptr;
  const std::vector<std::string>* statuses_ = nullptr;
  // Located on first use.
  mutable std::once_flag sched_once_, fing_once_, heap_once_;
  mutable absl::StatusOr<GoRuntimeVars> sched_vars_ = absl::UnknownError("not located");
  mutable absl::StatusOr<uint64_t> fing_var_ = absl::NotFoundError("not located");  // link-time
  mutable absl::StatusOr<GoHeapVars> heap_vars_ = absl::UnknownError("not located");
  mutable std::mutex mu_;
  // Whether `pred` holds for the name of the function at `startpc`, cached in `cache` (bounded).
  bool StartIs(std::map<uint64_t, bool>* cache, uint64_t startpc,
               bool (*pred)(const std::string& name)) const;
  mutable std::map<uint64_t, bool> system_start_;     // startpc -> system goroutine
  mutable std::map<uint64_t, bool> finalizer_start_;  // startpc -> runtime.runfinq
  mutable std::map<uint64_t, bool> cleanup_start_;    // startpc -> runtime.runCleanups
};

// The load bias of the executable in process `pid` (0 for non-PIE): maps's start of the
// mapping of `exe_segments` minus its link-time address. NotFound if it is not mapped.
absl::StatusOr<uint64_t> GoExeLoadBias(pid_t pid, uint64_t inode,
                                       const std::vector<ElfSegment>& exe_segments);

// A running Go process: its binary, load bias and memory.
struct GoProcess {
  pid_t pid = 0;
  std::shared_ptr<const GoBinary> bin;
  uint64_t bias = 0;
  std::string exe;  // readlink of /proc/PID/exe
  std::unique_ptr<ProcessMemory> mem;
};

// A Go binary mapped into a process at `bias`, for symbolization.
struct GoImage {
  const GoBinary* bin = nullptr;
  uint64_t bias = 0;
  std::string path;  // the executable as the target sees it (mapping filename)
};

// What a process's executable is to the Go-runtime reader (shared by every process running it).
struct GoExecutable {
  std::string key;  // "major:minor:inode" of the file
  uint64_t inode = 0;
  std::string go_version;  // the release its build info names ("go1.27.4"); "" if none
  // NotFound if it is not a Go program; FailedPrecondition (naming the release) if its Go symbol
  // table cannot be read (a newer Go release).
  absl::StatusOr<std::shared_ptr<const GoBinary>> bin;
  // A Go program: its pclntab could be read, or its build info names a Go release.
  bool is_go() const { return bin.ok() || !go_version.empty(); }
};

// The agent's one cache of executables for the Go-runtime reader (goroutine, threadcreate, block,
// mutex, heap): one GoExecutable per file (device, inode), the 16 used last.
class GoBinaryCache {
 public:
  // The executable `pid` runs. NotFound if the process is gone; an error opening the file is
  // returned as is (and not cached).
  absl::StatusOr<std::shared_ptr<const GoExecutable>> Executable(pid_t pid);
  // NotFound if the process is gone; Unimplemented (naming it) if it is not a Go program.
  absl::StatusOr<GoProcess> Open(pid_t pid);
  // Process `pid`, which runs `exe` (a readable Go binary: exe.bin OK): its load bias and memory.
  static absl::StatusOr<GoProcess> Open(pid_t pid, const GoExecutable& exe);
  // OK if `pid` runs a Go binary whose runtime the agent can read; else why not.
  absl::Status Check(pid_t pid);
  // The executable `pid` runs; errors as Open's.
  absl::StatusOr<std::shared_ptr<const GoBinary>> BinaryOf(pid_t pid);

 private:
  struct Entry {
    std::shared_ptr<const GoExecutable> exe;
    uint64_t used = 0;
  };
  std::mutex mu_;
  std::map<std::string, Entry> exes_;  // by key
  uint64_t uses_ = 0;
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_GORUNTIME_GO_RUNTIME_H_
