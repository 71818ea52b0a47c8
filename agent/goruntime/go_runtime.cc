#include "agent/goruntime/go_runtime.h"

#include <elf.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/symbolize/go_buildinfo.h"
#include "agent/symbolize/proc_maps.h"

namespace pprof_sidecar {
namespace {

struct ReleaseStrings {
  int minor;
  std::vector<std::string> wait_reasons;
  std::vector<std::string> statuses;
};

const std::vector<ReleaseStrings>& AllStrings() {
  static const auto* all = new std::vector<ReleaseStrings>{
#include "agent/goruntime/go_runtime_strings.inc"
  };
  return *all;
}

GoLayout Layout119() {
  GoLayout l;
  l.g_size = 392, l.g_m = 48, l.g_sched_sp = 56, l.g_sched_pc = 64, l.g_sched_bp = 104;
  l.g_syscallsp = 112, l.g_syscallpc = 120, l.g_atomicstatus = 144, l.g_goid = 152;
  l.g_waitsince = 168, l.g_waitreason = 176, l.g_lockedm = 232, l.g_parent_goid = -1;
  l.g_gopc = 296, l.g_startpc = 312, l.g_labels = 360;
  l.m_procid = 72, l.m_curg = 192, l.m_id = 232, l.m_alllink = 336, l.m_createstack = 360;
  return l;
}

// Each release's layout as the change from the previous one (DWARF of each release).
std::map<int, GoLayout> BuildLayouts() {
  std::map<int, GoLayout> m;
  GoLayout l = Layout119();
  m[19] = m[20] = l;
  l.g_size = 408, l.g_lockedm = 208, l.g_parent_goid = 272, l.g_gopc = 280, l.g_startpc = 296;
  l.g_labels = 344;
  m[21] = l;
  l.g_size = 424, l.m_alllink = 328, l.m_createstack = 352;
  m[22] = l;
  l.g_size = 432, l.g_atomicstatus = 152, l.g_goid = 160, l.g_waitsince = 176;
  l.g_waitreason = 184, l.g_lockedm = 216, l.g_parent_goid = 280, l.g_gopc = 288;
  l.g_startpc = 304, l.g_labels = 352;
  m[23] = l;
  l.g_size = 440, l.m_alllink = 352, l.m_createstack = 376;
  m[24] = l;
  // 1.25: gobuf lost its ret word.
  l.g_sched_bp = 96, l.g_syscallsp = 104, l.g_syscallpc = 112, l.g_atomicstatus = 144;
  l.g_goid = 152, l.g_waitsince = 168, l.g_waitreason = 176, l.g_lockedm = 208;
  l.g_parent_goid = 272, l.g_gopc = 280, l.g_startpc = 296, l.g_labels = 344;
  l.m_procid = 64, l.m_curg = 184, l.m_id = 224, l.m_alllink = 344, l.m_createstack = 368;
  l.g_running_cleanups = 218;
  m[25] = l;
  l.g_size = 456, l.g_parent_goid = 280, l.g_gopc = 288, l.g_startpc = 304, l.g_labels = 352;
  l.m_id = 232, l.m_alllink = 352, l.m_createstack = 392;
  l.g_running_cleanups = 220;
  m[26] = m[27] = l;
  for (auto& [minor, layout] : m) layout.minor = minor;
  return m;
}

// The scheduler's variables and the runtime functions that use them (Go 1.19..1.27 sources).
// allglen is read before allgptr (atomicAllG), so the prefix read is always allocated.
std::vector<GoVarSpec> SchedSpecs() {
  return {
      {"runtime.allglen",
       8,
       {GoDataClass::kNoptrBss},
       {"runtime.allgadd", "runtime.atomicAllG", "runtime.forEachGRace", "runtime.gcount",
        "runtime.goroutineProfileWithLabelsConcurrent", "runtime.goroutineProfileWithLabels",
        "runtime/pprof.countGoroutine", "runtime.NumGoroutine", "runtime.checkdead"}},
      {"runtime.allgptr",
       8,
       {GoDataClass::kBss},
       {"runtime.allgadd", "runtime.atomicAllG", "runtime.forEachGRace"}},
      {"runtime.allm",
       8,
       {GoDataClass::kBss},
       {"runtime.NumCgoCall", "runtime.ThreadCreateProfile", "runtime.threadCreateProfileInternal",
        "runtime.mcommoninit", "runtime.mexit", "runtime.schedtrace",
        "runtime.syscall_runtime_doAllThreadsSyscall", "runtime.totalMutexWaitTimeNanos",
        "runtime.addExtraM", "runtime.dropm", "runtime.pprof_threadCreateInternal",
        "runtime/pprof.countThreadCreate", "runtime/pprof.writeThreadCreate.func1",
        "runtime.traceAdvance"}},
  };
}

// The finalizer goroutine's state: runtime.fingStatus (atomic.Uint32, Go 1.20+) or
// runtime.fingRunning (bool, 1.19), and the runtime functions that use it.
GoVarSpec FingSpec(int minor) {
  if (minor >= 20) {
    return {"runtime.fingStatus",
            4,
            {GoDataClass::kNoptrBss},
            {"runtime.runfinq", "runtime.runFinalizers", "runtime.queuefinalizer",
             "runtime.wakefing", "runtime.createfing", "runtime.isSystemGoroutine",
             "runtime.goroutineProfileWithLabelsConcurrent", "runtime.findRunnable",
             "runtime.findrunnable"}};
  }
  return {"runtime.fingRunning",
          1,
          {GoDataClass::kNoptrBss},
          {"runtime.runfinq", "runtime.isSystemGoroutine",
           "runtime.goroutineProfileWithLabelsConcurrent"}};
}

constexpr uint32_t kFingRunningFinalizer = 2;  // fingStatus bit, Go 1.20+

}  // namespace

const GoLayout* GoLayoutFor(int minor) {
  static const auto* layouts = new std::map<int, GoLayout>(BuildLayouts());
  auto it = layouts->find(minor);
  return it == layouts->end() ? nullptr : &it->second;
}

absl::StatusOr<std::shared_ptr<const GoBinary>> GoBinary::Open(const std::string& path) {
  absl::StatusOr<std::unique_ptr<ElfFile>> elf = ElfFile::Open(path);
  if (!elf.ok()) return elf.status();
  return FromElf(std::move(*elf), nullptr);
}

absl::StatusOr<std::shared_ptr<const GoBinary>> GoBinary::FromElf(std::unique_ptr<ElfFile> elf,
                                                                  std::string* go_version) {
  std::shared_ptr<GoBinary> b(new GoBinary());
  b->elf_ = std::move(elf);
  b->pie_ = b->elf_->type() == ET_DYN;
  absl::StatusOr<std::string> version = GoBuildVersion(*b->elf_);
  if (version.ok()) b->go_version_ = *version;
  if (go_version != nullptr) *go_version = b->go_version_;
  absl::StatusOr<std::unique_ptr<GoPclntab>> pcln = GoPclntab::FromElf(*b->elf_);
  b->elf_->ReleasePages();
  if (!pcln.ok()) {
    if (absl::IsNotFound(pcln.status()) && !version.ok()) return pcln.status();
    return absl::FailedPreconditionError(
        absl::StrCat(version.ok() ? absl::StrCat("a ", *version, " binary: ") : "",
                     "cannot read its Go symbol table (.gopclntab): ", pcln.status().message()));
  }
  b->pcln_ = std::move(*pcln);
  std::optional<GoRelease> r = version.ok() ? ParseGoRelease(*version) : std::nullopt;
  b->minor_ = r ? r->minor : 0;
  for (const ReleaseStrings& s : AllStrings()) {
    if (s.minor == b->minor_) {
      b->wait_reasons_ = &s.wait_reasons;
      b->statuses_ = &s.statuses;
    }
  }
  return std::shared_ptr<const GoBinary>(std::move(b));
}

const absl::StatusOr<GoRuntimeVars>& GoBinary::sched_vars() const {
  std::call_once(sched_once_, [this] {
    absl::StatusOr<std::vector<GoVarLocation>> locs = LocateGoVars(*elf_, *pcln_, SchedSpecs());
    elf_->ReleasePages();
    if (!locs.ok()) {
      sched_vars_ = absl::NotFoundError(absl::StrCat(
          "cannot locate the Go scheduler's goroutine and thread lists in a binary built with ",
          go_version_.empty() ? "an unknown Go" : go_version_, ": ", locs.status().message()));
      return;
    }
    GoRuntimeVars v;
    v.allglen = (*locs)[0].addr;
    v.allgptr = (*locs)[1].addr;
    v.allm = (*locs)[2].addr;
    v.method = (*locs)[0].method;
    sched_vars_ = v;
  });
  return sched_vars_;
}

const absl::StatusOr<uint64_t>& GoBinary::finalizer_var() const {
  std::call_once(fing_once_, [this] {
    if (minor_ < 19) return;  // "not located"
    absl::StatusOr<std::vector<GoVarLocation>> fing =
        LocateGoVars(*elf_, *pcln_, {FingSpec(minor_)});
    elf_->ReleasePages();
    if (fing.ok()) {
      fing_var_ = (*fing)[0].addr;
    } else {
      fing_var_ = fing.status();
    }
  });
  return fing_var_;
}

const absl::StatusOr<GoHeapVars>& GoBinary::heap_vars(bool* located_now) const {
  bool now = false;
  std::call_once(heap_once_, [this, &now] {
    heap_vars_ = LocateGoHeapVars(*elf_, *pcln_);
    elf_->ReleasePages();
    now = true;
  });
  if (located_now != nullptr) *located_now = now;
  return heap_vars_;
}

absl::StatusOr<GoLayout> GoBinary::layout() const {
  const GoLayout* l = GoLayoutFor(minor_);
  if (l == nullptr || wait_reasons_ == nullptr) {
    return absl::UnimplementedError(
        absl::StrCat("no runtime struct layout for ",
                     go_version_.empty() ? "an unknown Go release" : go_version_,
                     " (this agent knows go1.19 through go1.27)"));
  }
  return *l;
}

std::string GoBinary::WaitReason(uint8_t reason) const {
  if (wait_reasons_ == nullptr || reason >= wait_reasons_->size()) return "unknown wait reason";
  return (*wait_reasons_)[reason];
}

std::string GoBinary::StatusString(uint32_t status) const {
  if (statuses_ == nullptr || status >= statuses_->size()) return "???";
  return (*statuses_)[status];
}

bool GoBinary::StartIs(std::map<uint64_t, bool>* cache, uint64_t startpc,
                       bool (*pred)(const std::string& name)) const {
  std::lock_guard<std::mutex> l(mu_);
  auto it = cache->find(startpc);
  if (it != cache->end()) return it->second;
  absl::StatusOr<GoPclntab::FuncInfo> f = pcln_->LookupFunc(startpc);
  const bool is = f.ok() && pred(f->name);
  if (cache->size() < 4096) (*cache)[startpc] = is;
  return is;
}

bool GoBinary::IsSystemGoroutineStart(uint64_t startpc) const {
  // runtime.main, coroutines and wasm events are user goroutines; the finalizer and cleanup
  // goroutines are system ones here: the goroutine reader makes them user ones while they run
  // user code, as Go does (FinalizerRunning, g.runningCleanups).
  return StartIs(&system_start_, startpc, [](const std::string& n) {
    return absl::StartsWith(n, "runtime.") && n != "runtime.main" && n != "runtime.corostart" &&
           n != "runtime.handleAsyncEvent";
  });
}

bool GoBinary::IsFinalizerGoroutineStart(uint64_t startpc) const {
  return StartIs(&finalizer_start_, startpc, [](const std::string& n) {
    return n == "runtime.runfinq" || n == "runtime.runFinalizers";
  });
}

bool GoBinary::IsCleanupGoroutineStart(uint64_t startpc) const {
  return StartIs(&cleanup_start_, startpc,
                 [](const std::string& n) { return n == "runtime.runCleanups"; });
}

absl::StatusOr<bool> GoBinary::FinalizerRunning(MemoryReader& mem, uint64_t bias) const {
  const absl::StatusOr<uint64_t>& var = finalizer_var();
  if (!var.ok()) return var.status();
  if (minor_ >= 20) {
    absl::StatusOr<uint32_t> v = mem.ReadU32(*var + bias);
    if (!v.ok()) return v.status();
    return (*v & kFingRunningFinalizer) != 0;
  }
  uint8_t v = 0;
  if (absl::Status st = mem.Read(*var + bias, &v, 1); !st.ok()) return st;
  return v != 0;
}

absl::StatusOr<uint64_t> GoExeLoadBias(pid_t pid, uint64_t inode,
                                       const std::vector<ElfSegment>& exe_segments) {
  absl::StatusOr<std::vector<MapEntry>> maps = ReadProcMaps(pid);
  if (!maps.ok()) return maps.status();
  char buf[4096];
  ssize_t n = readlink(absl::StrCat("/proc/", pid, "/exe").c_str(), buf, sizeof(buf) - 1);
  std::string exe_path = n > 0 ? std::string(buf, n) : "";
  if (absl::EndsWith(exe_path, " (deleted)")) exe_path.resize(exe_path.size() - 10);
  // Match by inode (overlayfs may report another device in maps than stat does), else by path.
  for (const MapEntry& e : *maps) {
    if (e.inode != inode && (exe_path.empty() || e.path != exe_path)) continue;
    for (const ElfSegment& s : exe_segments) {
      if (e.offset >= s.offset && e.offset - s.offset < std::max(s.filesz, uint64_t{1})) {
        return e.start - (s.vaddr + (e.offset - s.offset));
      }
    }
  }
  return absl::NotFoundError(
      absl::StrCat("pid ", pid, ": executable mapping not found in /proc/PID/maps"));
}

absl::StatusOr<std::shared_ptr<const GoExecutable>> GoBinaryCache::Executable(pid_t pid) {
  const std::string path = absl::StrCat("/proc/", pid, "/exe");
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("process ", pid, " exited (", path, ")"));
  }
  const std::string key = absl::StrCat(major(st.st_dev), ":", minor(st.st_dev), ":", st.st_ino);
  std::lock_guard<std::mutex> l(mu_);
  auto it = exes_.find(key);
  if (it != exes_.end()) {
    it->second.used = ++uses_;
    return it->second.exe;
  }
  absl::StatusOr<std::unique_ptr<ElfFile>> elf = ElfFile::Open(path);
  if (!elf.ok()) return elf.status();
  auto exe = std::make_shared<GoExecutable>();
  exe->key = key;
  exe->inode = st.st_ino;
  exe->bin = GoBinary::FromElf(std::move(*elf), &exe->go_version);
  if (exes_.size() >= 16) {  // targets are few: the least recently used goes
    auto lru = exes_.begin();
    for (auto e = exes_.begin(); e != exes_.end(); ++e) {
      if (e->second.used < lru->second.used) lru = e;
    }
    exes_.erase(lru);
  }
  exes_[key] = Entry{exe, ++uses_};
  return std::shared_ptr<const GoExecutable>(std::move(exe));
}

namespace {

// Why the runtime of `pid`, which runs a binary that cannot be read (`st`), cannot be read.
absl::Status BinaryError(pid_t pid, const absl::Status& st) {
  if (!absl::IsNotFound(st)) return st;
  return absl::UnimplementedError(absl::StrCat(
      "pid ", pid, " is not a Go program (no Go runtime to read: ", st.message(), ")"));
}

}  // namespace

absl::StatusOr<std::shared_ptr<const GoBinary>> GoBinaryCache::BinaryOf(pid_t pid) {
  absl::StatusOr<std::shared_ptr<const GoExecutable>> exe = Executable(pid);
  if (!exe.ok()) return exe.status();
  if (!(*exe)->bin.ok()) return BinaryError(pid, (*exe)->bin.status());
  return (*exe)->bin;
}

absl::Status GoBinaryCache::Check(pid_t pid) {
  absl::StatusOr<std::shared_ptr<const GoBinary>> b = BinaryOf(pid);
  if (!b.ok()) return b.status();
  if (absl::StatusOr<GoLayout> l = (*b)->layout(); !l.ok()) return l.status();
  return (*b)->sched_vars().status();
}

absl::StatusOr<GoProcess> GoBinaryCache::Open(pid_t pid) {
  absl::StatusOr<std::shared_ptr<const GoExecutable>> exe = Executable(pid);
  if (!exe.ok()) return exe.status();
  if (!(*exe)->bin.ok()) return BinaryError(pid, (*exe)->bin.status());
  return Open(pid, **exe);
}

absl::StatusOr<GoProcess> GoBinaryCache::Open(pid_t pid, const GoExecutable& exe) {
  if (!exe.bin.ok()) return exe.bin.status();
  GoProcess p;
  p.pid = pid;
  p.bin = *exe.bin;
  if (p.bin->pie()) {
    absl::StatusOr<uint64_t> bias = GoExeLoadBias(pid, exe.inode, p.bin->elf().load_segments());
    if (!bias.ok()) return bias.status();
    p.bias = *bias;
  }
  char buf[4096];
  ssize_t n = readlink(absl::StrCat("/proc/", pid, "/exe").c_str(), buf, sizeof(buf) - 1);
  if (n > 0) p.exe.assign(buf, n);
  absl::StatusOr<std::unique_ptr<ProcessMemory>> mem = ProcessMemory::Open(pid);
  if (!mem.ok()) return mem.status();
  p.mem = std::move(*mem);
  return p;
}

}  // namespace pprof_sidecar
