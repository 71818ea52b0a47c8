#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <elf.h>
#include <errno.h>
#include <linux/capability.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <tuple>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "agent/goruntime/go_runtime.h"
#include "agent/sampler/libbpf_util.h"
#include "agent/sampler/malloc_sampler.h"
#include "agent/sampler/ring_reader.h"
#include "agent/symbolize/elf_file.h"
#include "agent/unwind/sample_unwinder.h"
#include "bpf/heap_sampler.h"
#include "bpf/heap_sampler.skel.h"

namespace pprof_sidecar {
namespace {

constexpr const char kPrivileges[] = "CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE (or root)";

// Whether the calling thread holds `cap` in its effective set (capget(2)).
bool HasEffectiveCapability(int cap) {
  __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  if (syscall(SYS_capget, &hdr, data) != 0) return true;  // unknown: let the attach tell
  return (data[cap / 32].effective & (1u << (cap % 32))) != 0;
}

constexpr const char kNeedsSysAdmin[] =
    "the agent lacks CAP_SYS_ADMIN, which uprobes through the perf PMU need on kernels with the "
    "2025 uprobe fix (backported to stable kernels; kernels with uprobe sessions, 6.13+, need "
    "none): grant it for native heap profiles (Helm chart: agent.nativeHeap=true)";

// The BPF_TRACE_UPROBE_SESSION attach type of the running kernel (from its BTF), if it has
// uprobe sessions (6.13+) and their kfunc.
std::optional<uint32_t> UprobeSessionAttachType() {
  btf* vmlinux = btf__load_vmlinux_btf();
  if (vmlinux == nullptr) return std::nullopt;
  std::optional<uint32_t> out;
  const int e = btf__find_by_name_kind(vmlinux, "bpf_attach_type", BTF_KIND_ENUM);
  if (btf__find_by_name_kind(vmlinux, "bpf_session_is_return", BTF_KIND_FUNC) > 0 && e > 0) {
    const btf_type* t = btf__type_by_id(vmlinux, e);
    const struct btf_enum* m = btf_enum(t);
    for (int i = 0; i < btf_vlen(t); ++i, ++m) {
      if (strcmp(btf__name_by_offset(vmlinux, m->name_off), "BPF_TRACE_UPROBE_SESSION") == 0) {
        out = static_cast<uint32_t>(m->val);
      }
    }
  }
  btf__free(vmlinux);
  return out;
}

// Whether uprobe programs can read their attach cookie (bpf_get_attach_cookie, 5.15+): then
// probes may sit where an argument moved to another register (the cookie says which).
bool KernelHasUprobeCookies() {
  static const bool has =
      libbpf_probe_bpf_helper(BPF_PROG_TYPE_KPROBE, BPF_FUNC_get_attach_cookie, nullptr) == 1;
  return has;
}

// BPF_LINK_CREATE of an uprobe_multi link with one offset (libbpf 1.1 predates them): the
// attr's link_create layout of <linux/bpf.h> since 6.6. Returns the link's fd (none, with errno
// set, on failure).
ScopedFd AttachUprobeMulti(int prog_fd, uint32_t attach_type, const std::string& path,
                           uint64_t offset, uint64_t cookie, pid_t pid) {
  struct {
    uint32_t prog_fd, target_fd, attach_type, flags;
    uint64_t path, offsets, ref_ctr_offsets, cookies;
    uint32_t cnt, multi_flags, pid, pad;
    uint8_t zero[64];  // the rest of union bpf_attr: must be zero
  } attr;
  memset(&attr, 0, sizeof(attr));
  attr.prog_fd = static_cast<uint32_t>(prog_fd);
  attr.attach_type = attach_type;
  attr.path = reinterpret_cast<uint64_t>(path.c_str());
  attr.offsets = reinterpret_cast<uint64_t>(&offset);
  attr.cookies = reinterpret_cast<uint64_t>(&cookie);
  attr.cnt = 1;
  attr.pid = static_cast<uint32_t>(pid);
  return ScopedFd(static_cast<int>(syscall(SYS_bpf, BPF_LINK_CREATE, &attr, sizeof(attr))));
}

class BpfMallocSampler : public NativeHeapSource {
 public:
  BpfMallocSampler(pid_t pid, const MallocSamplerOptions& o)
      : pid_(pid),
        opts_(o),
        state_(MallocProfileState::Limits{o.max_live, o.max_buckets, HEAP_SAMPLER_MAX_FRAMES}) {
    if (o.symbolizer != nullptr && o.stack_copy_bytes > 0) {
      unwinder_ = std::make_unique<SampleUnwinder>(o.symbolizer, o.unwind_tables);
      state_.SetStackUnwinder(
          [this](const AllocRegs& r, absl::string_view stack, const std::vector<uint64_t>& fp_ips,
                 std::vector<uint64_t>* out) { return Unwind(r, stack, fp_ips, out); });
    }
  }
  ~BpfMallocSampler() override {
    if (reader_) reader_->Stop();
    links_.clear();  // detach before the programs and maps go away
    session_links_.clear();
  }

  absl::Status Init(const std::vector<AllocatorProbe>& probes, const std::vector<MapEntry>& maps);
  absl::StatusOr<int> ProbeNewMappings() override;

  pid_t pid() const override { return pid_; }
  HeapSnapshot Snapshot() override {
    // Records wait in the ring up to the reader's 100 ms poll: take them all first.
    if (reader_) reader_->Flush();
    std::lock_guard<std::mutex> l(mu_);
    return state_.Snapshot(opts_.sample_bytes);
  }
  MallocSamplerStats stats() const override;
  absl::Time attached_at() const override { return attached_at_; }
  std::string Describe() const override {
    std::lock_guard<std::mutex> l(attach_mu_);
    return describe_;
  }

 private:
  static int OnRecord(void* ctx, void* data, size_t size) {
    auto* self = static_cast<BpfMallocSampler*>(ctx);
    std::lock_guard<std::mutex> l(self->mu_);
    self->state_.HandleRecord(data, size);
    return 0;
  }

  // AllocStackUnwinder over the CPU profiles' SampleUnwinder (called under mu_).
  bool Unwind(const AllocRegs& r, absl::string_view stack, const std::vector<uint64_t>& fp_ips,
              std::vector<uint64_t>* out) {
    StackSample s;
    s.pid = static_cast<uint32_t>(pid_);
    s.regs.ip = r.ip;
    s.regs.sp = r.sp;
    s.regs.bp = r.bp;
    s.fp_walk_bp = r.fp_bp;
    s.user_stack.assign(stack.data(), stack.size());
    s.user_ips = fp_ips;
    unwinder_->Reduce(&s);
    if (!s.unwound.done || s.user_ips.empty()) return false;
    *out = std::move(s.user_ips);
    (*out)[0] = r.ip;  // a return address, not an interrupted pc
    return true;
  }

  // Attaches the probes of `probes` not attached yet (a session each where the kernel has them,
  // else each function's return probe, then its entry). Returns how many functions were newly
  // probed; failures go to errors_.
  int AttachNew(const std::vector<AllocatorProbe>& probes);
  absl::Status AttachOne(const AllocatorProbe& pr);
  absl::StatusOr<BpfLinkPtr> AttachPerf(const AllocatorProbe& pr, bpf_program* prog, bool ret);
  absl::StatusOr<ScopedFd> AttachSession(const AllocatorProbe& pr, bpf_program* prog);
  // Attaches a `kind` probe of `pr` with `attach(path)` through each of ProbePaths(pr) in turn
  // until one holds (`attach` returns an owner that is false, with errno set, on failure); a
  // target that is gone (ESRCH) ends the tries. The last failure's errno goes to last_errno_.
  template <typename Attach>
  auto AttachThroughPaths(const AllocatorProbe& pr, absl::string_view kind, Attach attach)
      -> absl::StatusOr<decltype(attach(std::string()))>;
  // Publishes the functions' address ranges to the BPF program's nested_call().
  void SetNestedRanges(const std::vector<AllocatorProbe>& probes);

  const pid_t pid_;
  const MallocSamplerOptions opts_;
  SkeletonPtr<heap_sampler_bpf, heap_sampler_bpf__destroy> skel_;
  std::unique_ptr<RingReader> reader_;
  absl::Time attached_at_;

  mutable std::mutex attach_mu_;  // guards the fields below
  std::vector<BpfLinkPtr> links_;
  std::vector<ScopedFd> session_links_;   // uprobe_multi session links (fds)
  std::optional<uint32_t> session_type_;  // BPF_TRACE_UPROBE_SESSION if sessions are used
  std::set<std::tuple<uint64_t, std::string, uint64_t>> probed_;  // (inode, mapped, file offset)
  std::vector<std::string> attached_, errors_;  // "function@path"; last round's failures
  std::string maps_key_;                        // AllocatorMappingsKey when last probed
  int last_errno_ = 0;                          // of the last failed attach
  std::string describe_;
  std::atomic<uint64_t> nlinks_{0};

  mutable std::mutex mu_;
  MallocProfileState state_;
  std::unique_ptr<SampleUnwinder> unwinder_;  // used under mu_ (null: no stack copies)
};

// A Go executable (cgo): the runtime's struct offsets of its release, with which the BPF program
// continues a C allocation's stack into the goroutine that called C (cgo_goroutine_bp). Left at
// 0 (no such walk) for other executables and releases without a layout. `cache` may be null.
void SetGoOffsets(pid_t pid, GoBinaryCache* cache, heap_sampler_bpf* skel) {
  absl::StatusOr<std::shared_ptr<const GoBinary>> bin =
      cache != nullptr ? cache->BinaryOf(pid)
                       : GoBinary::Open(absl::StrCat("/proc/", pid, "/exe"));
  if (!bin.ok()) return;
  absl::StatusOr<GoLayout> l = (*bin)->layout();
  if (!l.ok() || l->g_m <= 0 || l->m_curg <= 0 || l->g_sched_bp <= 0) return;
  skel->rodata->go_g_m = static_cast<uint32_t>(l->g_m);
  skel->rodata->go_m_curg = static_cast<uint32_t>(l->m_curg);
  skel->rodata->go_g_sched_bp = static_cast<uint32_t>(l->g_sched_bp);
}

absl::Status BpfMallocSampler::Init(const std::vector<AllocatorProbe>& probes,
                                    const std::vector<MapEntry>& maps) {
  absl::StatusOr<PidNamespaceId> pidns = AgentPidNamespace();
  if (!pidns.ok()) return pidns.status();
  auto skel = OpenSkeleton<heap_sampler_bpf, heap_sampler_bpf__destroy>(heap_sampler_bpf__open,
                                                                        "the heap sampler");
  if (!skel.ok()) return skel.status();
  skel_ = *std::move(skel);
  skel_->rodata->pidns_dev = pidns->dev;
  skel_->rodata->pidns_ino = pidns->ino;
  skel_->rodata->target_tgid = static_cast<uint32_t>(pid_);
  skel_->rodata->sample_all = opts_.sample_bytes <= 1 ? 1 : 0;
  const std::vector<uint64_t> table =
      ExponentialIntervals(static_cast<double>(opts_.sample_bytes), HEAP_SAMPLER_INTERVALS);
  for (size_t i = 0; i < table.size(); ++i) {
    skel_->rodata->sample_intervals[i] = table[i];
  }
  if (int err = bpf_map__set_max_entries(skel_->maps.live, opts_.max_live); err != 0) {
    return ErrnoStatus("bpf_map__set_max_entries(live)", -err, kPrivileges);
  }
  skel_->rodata->stack_copy_bytes = unwinder_ ? (opts_.stack_copy_bytes & ~7u) : 0;
  skel_->rodata->wakeup_bytes = std::min(opts_.wakeup_bytes, opts_.ringbuf_bytes / 4);
  if (int err = bpf_map__set_max_entries(skel_->maps.events, opts_.ringbuf_bytes); err != 0) {
    return ErrnoStatus("bpf_map__set_max_entries(events)", -err, kPrivileges);
  }
  session_type_ = opts_.uprobe_sessions ? UprobeSessionAttachType() : std::nullopt;
  skel_->rodata->sessions = session_type_ ? 1 : 0;
  skel_->rodata->arg_cookies = KernelHasUprobeCookies() ? 1 : 0;
  SetGoOffsets(pid_, opts_.go_binaries, skel_.get());
  auto& p = skel_->progs;
  for (bpf_program* prog : {p.malloc_session, p.calloc_session, p.realloc_session,
                            p.posix_memalign_session, p.aligned_session, p.free_session}) {
    if (session_type_) {
      bpf_program__set_expected_attach_type(prog, static_cast<bpf_attach_type>(*session_type_));
    } else {
      bpf_program__set_autoload(prog, false);
    }
  }
  if (int err = heap_sampler_bpf__load(skel_.get()); err != 0) {
    return ErrnoStatus("heap_sampler_bpf__load", -err, kPrivileges);
  }
  auto reader =
      RingReader::Open(skel_->maps.events, "events", &BpfMallocSampler::OnRecord, this, 100);
  if (!reader.ok()) return reader.status();
  reader_ = *std::move(reader);

  std::lock_guard<std::mutex> l(attach_mu_);
  maps_key_ = AllocatorMappingsKey(pid_, maps);
  SetNestedRanges(probes);
  if (AttachNew(probes) == 0) {
    if (kill(pid_, 0) != 0 && errno == ESRCH) {
      return absl::NotFoundError(absl::StrCat("process ", pid_, " exited"));
    }
    if ((last_errno_ == EACCES || last_errno_ == EPERM) && !HasEffectiveCapability(CAP_SYS_ADMIN)) {
      // Not the target's fault nor a bug: what the agent was granted. 503 with the reason.
      return absl::FailedPreconditionError(
          absl::StrCat("uprobes refused (", strerror(last_errno_), "): ", kNeedsSysAdmin));
    }
    return absl::PermissionDeniedError(absl::StrCat("could not attach any allocator probe to pid ",
                                                    pid_, ": ", absl::StrJoin(errors_, "; ")));
  }
  attached_at_ = absl::Now();
  reader_->Start();
  return absl::OkStatus();
}

// Paths to attach a probe of `pr` through: map_files first (the mapped inode); else the file the
// agent opened (the same inode, or the mapped path resolved inside the target's root): never a
// path the kernel would resolve in the agent's root.
std::vector<std::string> ProbePaths(const AllocatorProbe& pr) {
  std::vector<std::string> paths = {pr.binary};
  if (pr.file) paths.push_back(pr.file->ProcPath());
  return paths;
}

template <typename Attach>
auto BpfMallocSampler::AttachThroughPaths(const AllocatorProbe& pr, absl::string_view kind,
                                          Attach attach)
    -> absl::StatusOr<decltype(attach(std::string()))> {
  std::string what;
  int err = 0;
  for (const std::string& path : ProbePaths(pr)) {
    auto owner = attach(path);
    if (owner) return owner;
    err = errno;
    what = absl::StrCat(kind, " ", pr.function, "@", path, "+0x", absl::Hex(pr.file_offset));
    if (err == ESRCH) break;
  }
  last_errno_ = err;
  return ErrnoStatus(what, err, kPrivileges);
}

absl::StatusOr<BpfLinkPtr> BpfMallocSampler::AttachPerf(const AllocatorProbe& pr, bpf_program* prog,
                                                        bool ret) {
  return AttachThroughPaths(pr, ret ? "uretprobe" : "uprobe", [&](const std::string& path) {
    LIBBPF_OPTS(bpf_uprobe_opts, opts, .bpf_cookie = ret ? 0 : pr.cookie, .retprobe = ret);
    return BpfLinkPtr(
        bpf_program__attach_uprobe_opts(prog, pid_, path.c_str(), pr.file_offset, &opts));
  });
}

absl::StatusOr<ScopedFd> BpfMallocSampler::AttachSession(const AllocatorProbe& pr,
                                                         bpf_program* prog) {
  return AttachThroughPaths(pr, "uprobe session", [&](const std::string& path) {
    return AttachUprobeMulti(bpf_program__fd(prog), *session_type_, path, pr.file_offset, pr.cookie,
                             pid_);
  });
}

absl::Status BpfMallocSampler::AttachOne(const AllocatorProbe& pr) {
  auto& p = skel_->progs;
  struct Progs {
    bpf_program *entry, *ret, *session;
  };
  const std::map<std::string, Progs> progs = {
      {"malloc", {p.malloc_entry, p.alloc_return, p.malloc_session}},
      {"calloc", {p.calloc_entry, p.alloc_return, p.calloc_session}},
      {"realloc", {p.realloc_entry, p.alloc_return, p.realloc_session}},
      {"posix_memalign",
       {p.posix_memalign_entry, p.posix_memalign_return, p.posix_memalign_session}},
      {"aligned_alloc", {p.aligned_entry, p.alloc_return, p.aligned_session}},
      {"memalign", {p.aligned_entry, p.alloc_return, p.aligned_session}},
      {"valloc", {p.malloc_entry, p.alloc_return, p.malloc_session}},
      {"pvalloc", {p.malloc_entry, p.alloc_return, p.malloc_session}},
      {"free", {p.free_entry, nullptr, p.free_session}},
  };
  auto it = progs.find(pr.function);
  if (it == progs.end()) return absl::InvalidArgumentError(pr.function);
  if (session_type_) {
    absl::StatusOr<ScopedFd> fd = AttachSession(pr, it->second.session);
    if (fd.ok()) {
      session_links_.push_back(*std::move(fd));
      return absl::OkStatus();
    }
    errors_.push_back(std::string(fd.status().message()));  // then the perf PMU probes
  }
  // Return probe first: an entry without its return would leave pending entries behind.
  BpfLinkPtr ret_link;
  if (it->second.ret != nullptr) {
    absl::StatusOr<BpfLinkPtr> r = AttachPerf(pr, it->second.ret, true);
    if (!r.ok()) return r.status();
    ret_link = *std::move(r);
  }
  absl::StatusOr<BpfLinkPtr> e = AttachPerf(pr, it->second.entry, false);
  if (!e.ok()) return e.status();
  if (ret_link) links_.push_back(std::move(ret_link));
  links_.push_back(*std::move(e));
  return absl::OkStatus();
}

int BpfMallocSampler::AttachNew(const std::vector<AllocatorProbe>& probes) {
  errors_.clear();
  int added = 0;
  for (const AllocatorProbe& pr : probes) {
    auto key = std::make_tuple(pr.inode, pr.mapped, pr.file_offset);
    if (probed_.count(key) != 0) continue;
    if (absl::Status st = AttachOne(pr); !st.ok()) {
      errors_.push_back(std::string(st.message()));
      continue;
    }
    probed_.insert(key);
    attached_.push_back(absl::StrCat(pr.function, "@", pr.mapped,
                                     pr.skipped ? absl::StrCat("+", pr.skipped) : "",
                                     pr.emulated ? "" : " (single-stepped)"));
    ++added;
  }
  nlinks_.store(links_.size() + session_links_.size());
  describe_ = absl::StrCat(session_type_ ? "uprobe sessions" : "uprobes + uretprobes", " on ",
                           absl::StrJoin(attached_, ", "));
  if (!errors_.empty()) absl::StrAppend(&describe_, "; failed: ", absl::StrJoin(errors_, "; "));
  return added;
}

void BpfMallocSampler::SetNestedRanges(const std::vector<AllocatorProbe>& probes) {
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const AllocatorProbe& pr : probes) {
    if (pr.function == "free" || pr.runtime_end <= pr.runtime_start) continue;
    if (ranges.size() == HEAP_SAMPLER_MAX_RANGES) break;
    ranges.emplace_back(pr.runtime_start, pr.runtime_end);
  }
  auto* bss = skel_->bss;
  const uint32_t n = __atomic_load_n(&bss->nested_n, __ATOMIC_RELAXED);
  // Entries [0, n) stay valid while they are rewritten only if they are unchanged: else hide
  // them first.
  bool prefix_same = n <= ranges.size();
  for (uint32_t i = 0; prefix_same && i < n; ++i) {
    prefix_same = bss->nested_lo[i] == ranges[i].first && bss->nested_hi[i] == ranges[i].second;
  }
  if (!prefix_same) __atomic_store_n(&bss->nested_n, 0, __ATOMIC_RELEASE);
  for (size_t i = 0; i < ranges.size(); ++i) {
    bss->nested_lo[i] = ranges[i].first;
    bss->nested_hi[i] = ranges[i].second;
  }
  __atomic_store_n(&bss->nested_n, static_cast<uint32_t>(ranges.size()), __ATOMIC_RELEASE);
}

absl::StatusOr<int> BpfMallocSampler::ProbeNewMappings() {
  absl::StatusOr<std::vector<MapEntry>> maps = ReadProcMaps(pid_);
  if (!maps.ok()) return maps.status();
  std::lock_guard<std::mutex> l(attach_mu_);
  std::string key = AllocatorMappingsKey(pid_, *maps);
  if (key == maps_key_) return 0;
  maps_key_ = std::move(key);
  absl::StatusOr<std::vector<AllocatorProbe>> probes =
      FindAllocatorProbes(pid_, *maps, KernelHasUprobeCookies());
  if (!probes.ok()) {
    if (absl::IsNotFound(probes.status())) return 0;  // e.g. exec'ed into a Go binary
    return probes.status();
  }
  SetNestedRanges(*probes);
  return AttachNew(*probes);
}

MallocSamplerStats BpfMallocSampler::stats() const {
  MallocSamplerStats s;
  const std::vector<uint64_t> c = PerCpuSums(skel_->maps.counters, HEAP_CNT_NUM);
  s.calls = c[HEAP_CNT_CALLS];
  s.bytes = c[HEAP_CNT_BYTES];
  s.sampled = c[HEAP_CNT_SAMPLED];
  s.recorded = c[HEAP_CNT_RECORDED];
  s.frees = c[HEAP_CNT_FREES];
  s.frees_tracked = c[HEAP_CNT_FREES_TRACKED];
  s.live_full = c[HEAP_CNT_LIVE_FULL];
  s.ringbuf_drops = c[HEAP_CNT_RINGBUF_DROPS];
  s.free_drops = c[HEAP_CNT_FREE_DROPS];
  s.stack_errors = c[HEAP_CNT_STACK_ERRORS];
  s.pending_full = c[HEAP_CNT_PENDING_FULL];
  s.pending_mismatch = c[HEAP_CNT_PENDING_MISMATCH];
  s.failed = c[HEAP_CNT_FAILED];
  s.nested = c[HEAP_CNT_NESTED];
  s.stack_copy_errors = c[HEAP_CNT_STACK_COPY_ERRORS];
  {
    std::lock_guard<std::mutex> l(mu_);
    state_.FillStats(&s);
  }
  s.probes = nlinks_.load();
  return s;
}

}  // namespace

absl::Status MallocSamplerPrivileges(const MallocSamplerOptions& options) {
  if (HasEffectiveCapability(CAP_SYS_ADMIN)) return absl::OkStatus();
  if (options.uprobe_sessions && UprobeSessionAttachType()) return absl::OkStatus();
  return absl::FailedPreconditionError(kNeedsSysAdmin);
}

absl::StatusOr<std::unique_ptr<NativeHeapSource>> StartMallocSampler(
    pid_t pid, const MallocSamplerOptions& options) {
  if (options.sample_bytes < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("heap sample bytes must be >= 1, got ", options.sample_bytes));
  }
  MallocSamplerOptions opts = options;
  if (opts.ringbuf_bytes == 0) {
    // ~100 ms of records (1 KiB + the stack copy each) of a target allocating 1.3 GB/s.
    const uint64_t record = 1024 + (opts.symbolizer ? opts.stack_copy_bytes : 0);
    const uint64_t want = (uint64_t{1} << 27) / static_cast<uint64_t>(opts.sample_bytes) * record;
    opts.ringbuf_bytes = 256u << 10;
    while (opts.ringbuf_bytes < want && opts.ringbuf_bytes < (8u << 20)) opts.ringbuf_bytes <<= 1;
  }
  const uint32_t rb = opts.ringbuf_bytes;
  if (rb < 4096 || (rb & (rb - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("ringbuf_bytes must be a power of two >= 4096, got ", rb));
  }
  if (opts.stack_copy_bytes > HEAP_SAMPLER_MAX_STACK_COPY || opts.stack_copy_bytes % 8 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("stack_copy_bytes must be a multiple of 8 <= ", HEAP_SAMPLER_MAX_STACK_COPY,
                     ", got ", opts.stack_copy_bytes));
  }
  if (opts.max_live < 1 || opts.max_buckets < 1) {
    return absl::InvalidArgumentError("max_live and max_buckets must be positive");
  }
  absl::StatusOr<std::vector<MapEntry>> maps = ReadProcMaps(pid);
  if (!maps.ok()) return maps.status();
  absl::StatusOr<std::vector<AllocatorProbe>> probes =
      FindAllocatorProbes(pid, *maps, KernelHasUprobeCookies());
  if (!probes.ok()) return probes.status();
  auto s = std::make_unique<BpfMallocSampler>(pid, opts);
  if (absl::Status st = s->Init(*probes, *maps); !st.ok()) {
    return absl::Status(st.code(),
                        absl::StrCat("malloc sampler for pid ", pid, ": ", st.message()));
  }
  return std::unique_ptr<NativeHeapSource>(std::move(s));
}

}  // namespace pprof_sidecar
