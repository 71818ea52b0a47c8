// BPF implementation of CpuSampler: the scheduler tick (`cpu_tick`) or per-CPU software cpu-clock
// perf events (`cpu_sample`) run a program of bpf/cpu_sampler.bpf.c that filters by target tgid
// and emits records to a ring buffer; a reader thread converts them to CpuSample for the sink.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <linux/perf_event.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "agent/sampler/cpu_sampler.h"
#include "agent/sampler/ring_reader.h"
#include "bpf/cpu_sampler.h"
#include "bpf/cpu_sampler.skel.h"

namespace pprof_sidecar {
namespace {

constexpr int kMaxHz = 100000;
// The auto clock uses the tick up to this rate: no kernel configuration ticks slower (HZ=100).
constexpr int kTickMaxAutoHz = 100;
constexpr size_t kMaxTargets = 1024;  // max_entries of the `targets` map

int LibbpfPrint(enum libbpf_print_level level, const char* format, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  fputs("pprof-sidecar: libbpf: ", stderr);
  return vfprintf(stderr, format, args);
}

// Status for a failed syscall or libbpf call `what` with errno `err`, with a hint about the
// capabilities needed when the kernel refused for lack of privilege.
absl::Status ErrnoStatus(absl::string_view what, int err, absl::string_view privilege_hint) {
  std::string msg = absl::StrCat(what, ": ", strerror(err));
  switch (err) {
    case EPERM:
    case EACCES:
      if (!privilege_hint.empty()) absl::StrAppend(&msg, " \xe2\x80\x94 needs ", privilege_hint);
      return absl::PermissionDeniedError(msg);
    case ENOENT:
    case ENODEV:
      return absl::NotFoundError(msg);
    case EINVAL:
      return absl::InvalidArgumentError(msg);
    case ENOMEM:
    case EMFILE:
    case ENFILE:
    case EBUSY:
      return absl::ResourceExhaustedError(msg);
    default:
      return absl::InternalError(msg);
  }
}

// Parses a kernel CPU list such as "0-3,5,7-8\n".
absl::StatusOr<std::vector<int>> ParseCpuList(absl::string_view text) {
  std::vector<int> cpus;
  text = absl::StripAsciiWhitespace(text);
  if (text.empty()) return absl::InvalidArgumentError("empty CPU list");
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    std::pair<absl::string_view, absl::string_view> range = absl::StrSplit(part, '-');
    int lo, hi;
    if (!absl::SimpleAtoi(range.first, &lo)) {
      return absl::InvalidArgumentError(absl::StrCat("bad CPU list \"", text, "\""));
    }
    hi = lo;
    if (!range.second.empty() && !absl::SimpleAtoi(range.second, &hi)) {
      return absl::InvalidArgumentError(absl::StrCat("bad CPU list \"", text, "\""));
    }
    if (lo < 0 || hi < lo || hi > 65535) {
      return absl::InvalidArgumentError(absl::StrCat("bad CPU list \"", text, "\""));
    }
    for (int c = lo; c <= hi; ++c) cpus.push_back(c);
  }
  return cpus;
}

absl::StatusOr<std::vector<int>> OnlineCpus() {
  const char* path = "/sys/devices/system/cpu/online";
  std::ifstream in(path);
  if (!in) return ErrnoStatus(absl::StrCat("open(", path, ")"), errno, "");
  std::stringstream ss;
  ss << in.rdbuf();
  absl::StatusOr<std::vector<int>> cpus = ParseCpuList(ss.str());
  if (!cpus.ok())
    return absl::Status(cpus.status().code(), absl::StrCat(path, ": ", cpus.status().message()));
  return cpus;
}

// Kernel addresses the tick clock needs, from /proc/kallsyms (all zero when its addresses are
// hidden from us: kernel.kptr_restrict without CAP_SYSLOG).
struct TickKernelInfo {
  uint64_t irqentry_lo = 0;  // [lo, hi): the interrupt entry stubs (__irqentry_text_*)
  uint64_t irqentry_hi = 0;
  std::string error;  // why the tick clock is unavailable, when it is
  bool ok() const { return error.empty(); }
};

TickKernelInfo ReadTickKernelInfo() {
  TickKernelInfo info;
  FILE* f = fopen("/proc/kallsyms", "re");
  if (f == nullptr) {
    info.error = absl::StrCat("open(/proc/kallsyms): ", strerror(errno));
    return info;
  }
  char line[512];
  while (fgets(line, sizeof(line), f) != nullptr) {
    // "ffffffff81000300 T __irqentry_text_start" (module symbols have a trailing "\t[module]").
    char* sp1 = strchr(line, ' ');
    if (sp1 == nullptr || sp1[1] == 0 || sp1[2] != ' ') continue;
    char* name = sp1 + 3;
    name[strcspn(name, "\t\n")] = 0;
    uint64_t* slot = nullptr;
    if (strcmp(name, "__irqentry_text_start") == 0) {
      slot = &info.irqentry_lo;
    } else if (strcmp(name, "__irqentry_text_end") == 0) {
      slot = &info.irqentry_hi;
    } else {
      continue;
    }
    *sp1 = 0;
    uint64_t addr = 0;
    if (absl::SimpleHexAtoi(line, &addr)) *slot = addr;
    if (info.irqentry_lo != 0 && info.irqentry_hi != 0) break;
  }
  fclose(f);
  if (info.irqentry_lo == 0 || info.irqentry_hi <= info.irqentry_lo) {
    info.error = "/proc/kallsyms has no addresses for __irqentry_text_start/__irqentry_text_end";
  }
  return info;
}

const TickKernelInfo& TickInfo() {
  static const TickKernelInfo* info = new TickKernelInfo(ReadTickKernelInfo());
  return *info;
}

class UniqueFd {
 public:
  explicit UniqueFd(int fd = -1) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    reset(o.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    if (fd_ >= 0) close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

struct SkelDeleter {
  void operator()(cpu_sampler_bpf* s) const { cpu_sampler_bpf__destroy(s); }
};
struct LinkDeleter {
  void operator()(bpf_link* l) const { bpf_link__destroy(l); }
};
struct RingBufferDeleter {
  void operator()(ring_buffer* rb) const { ring_buffer__free(rb); }
};

class BpfCpuSampler : public CpuSampler {
 public:
  static absl::StatusOr<std::unique_ptr<CpuSampler>> Create(const BpfCpuSamplerOptions& options);

  ~BpfCpuSampler() override {
    Stop();
    tick_link_.reset();
  }

  absl::Status Start(int hz, Sink sink) override;
  absl::Status SetTargets(const std::vector<uint32_t>& tgids) override;
  void Stop() override;
  void Flush() override;
  bool running() const override { return running_.load(); }
  SamplerStats stats() const override;

 private:
  BpfCpuSampler() = default;
  static int HandleRecord(void* ctx, void* data, size_t size);
  // Strips the tick interrupt's own frames from a tick sample's kernel stack.
  void StripTickFrames(CpuSample* s) const;

  std::unique_ptr<cpu_sampler_bpf, SkelDeleter> skel_;
  BpfCpuSamplerOptions::Clock clock_ = BpfCpuSamplerOptions::Clock::kAuto;
  bool tick_loaded_ = false;      // cpu_tick loaded (the kernel and kallsyms allow the tick clock)
  std::string tick_unavailable_;  // why not, when not
  std::atomic<bool> tick_running_{false};
  // The tick program's link: attached at the first tick-clock Start and kept until destruction
  // (detaching waits for RCU grace periods, ~70 ms); between windows the program is disabled
  // (tick_enabled) and records older than session_start_ns_ are dropped.
  std::unique_ptr<bpf_link, LinkDeleter> tick_link_;
  std::atomic<uint64_t> session_start_ns_{0};
  std::unique_ptr<ring_buffer, RingBufferDeleter> ringbuf_;
  std::unique_ptr<RingReader> reader_;  // after ringbuf_: destroyed first
  uint32_t user_stack_bytes_ = 0;

  std::mutex lifecycle_mu_;  // serializes Start/Stop
  std::atomic<bool> running_{false};
  std::vector<UniqueFd> perf_fds_;
  std::vector<std::unique_ptr<bpf_link, LinkDeleter>> links_;
  Sink sink_;

  std::mutex targets_mu_;
  std::set<uint32_t> targets_;

  std::atomic<uint64_t> delivered_{0};
  std::atomic<uint64_t> bytes_copied_{0};
  std::atomic<uint64_t> cpus_opened_{0};
  mutable std::atomic<uint64_t> tick_kstack_unstripped_{0};
  std::atomic<uint64_t> after_stop_{0};
};

absl::StatusOr<std::unique_ptr<CpuSampler>> BpfCpuSampler::Create(
    const BpfCpuSamplerOptions& options) {
  if (options.user_stack_bytes > CPU_SAMPLER_MAX_USER_STACK_COPY ||
      options.user_stack_bytes % 8 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("user_stack_bytes must be a multiple of 8 in [0, ",
                     CPU_SAMPLER_MAX_USER_STACK_COPY, "], got ", options.user_stack_bytes));
  }
  uint32_t rb = options.ringbuf_bytes;
  if (rb == 0) {
    const long ncpu = std::max(1L, sysconf(_SC_NPROCESSORS_ONLN));
    const uint64_t hz = static_cast<uint64_t>(std::max(1, std::min(options.expected_hz, kMaxHz)));
    const uint64_t want = hz * static_cast<uint64_t>(ncpu) * 2048 * 4 / 10;  // 400 ms of ~2 KiB
    rb = 512u << 10;
    while (rb < want && rb < (8u << 20)) rb <<= 1;
  }
  if (rb < 4096 || (rb & (rb - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("ringbuf_bytes must be a power of two >= 4096, got ", rb));
  }
  static std::once_flag print_once;
  std::call_once(print_once, [] { libbpf_set_print(LibbpfPrint); });

  struct stat st;
  if (stat("/proc/self/ns/pid", &st) != 0) {
    return ErrnoStatus("stat(/proc/self/ns/pid)", errno, "");
  }

  std::unique_ptr<BpfCpuSampler> s(new BpfCpuSampler());
  s->user_stack_bytes_ = options.user_stack_bytes;
  s->clock_ = options.clock;
  using Clock = BpfCpuSamplerOptions::Clock;
  bool with_tick = options.clock != Clock::kPerfCpuClock;
  if (with_tick && !TickInfo().ok()) {
    if (options.clock == Clock::kTick) {
      return absl::FailedPreconditionError(
          absl::StrCat("tick clock unavailable: ", TickInfo().error));
    }
    s->tick_unavailable_ = TickInfo().error;
    with_tick = false;
  }
  // With the tick program first; in auto mode a kernel that refuses it (no task storage, no
  // tracepoint programs) still gets the perf clock.
  for (;;) {
    s->skel_.reset(cpu_sampler_bpf__open());
    if (!s->skel_) return ErrnoStatus("cpu_sampler_bpf__open", errno, "");
    s->skel_->rodata->pidns_dev = st.st_dev;
    s->skel_->rodata->pidns_ino = st.st_ino;
    s->skel_->rodata->user_stack_copy_bytes = options.user_stack_bytes;
    s->skel_->rodata->copy_bound = (options.bound_copy_vma ? CPU_SAMPLER_BOUND_VMA : 0u) |
                                   (options.bound_copy_go ? CPU_SAMPLER_BOUND_GO_G : 0u);
    s->skel_->rodata->user_fp_walk =
        options.user_frame_pointer_walk
            ? static_cast<uint32_t>(
                  std::clamp(options.user_fp_max_frames, 1, CPU_SAMPLER_MAX_FRAMES))
            : 0;
    s->skel_->rodata->own_fp_walk = options.own_fp_walk ? 1 : 0;
    s->skel_->rodata->wakeup_bytes = std::min(options.wakeup_bytes, rb / 4);
    s->skel_->rodata->stage_timing = options.stage_timing ? 1 : 0;
    s->skel_->rodata->null_program = options.null_program ? 1 : 0;
    s->skel_->rodata->verdict_cache = options.cache_filter_verdict ? 1 : 0;
    s->skel_->rodata->walk_in_copy = options.walk_frames_in_copy ? 1 : 0;
    s->skel_->rodata->fp_seed_scan = options.scan_for_frame_record ? 1 : 0;
    if (int err = bpf_map__set_max_entries(s->skel_->maps.events, rb); err != 0) {
      return ErrnoStatus("bpf_map__set_max_entries(events)", -err, "");
    }
    bpf_program__set_autoload(s->skel_->progs.cpu_tick, with_tick);
    int err = cpu_sampler_bpf__load(s->skel_.get());
    if (err == 0) break;
    if (with_tick && options.clock == Clock::kAuto) {
      s->tick_unavailable_ = absl::StrCat("loading the tick program: ", strerror(-err));
      with_tick = false;
      continue;
    }
    return ErrnoStatus("cpu_sampler_bpf__load", -err, "CAP_BPF and CAP_PERFMON (or root)");
  }
  s->tick_loaded_ = with_tick;
  s->ringbuf_.reset(ring_buffer__new(bpf_map__fd(s->skel_->maps.events),
                                     &BpfCpuSampler::HandleRecord, s.get(), nullptr));
  if (!s->ringbuf_) return ErrnoStatus("ring_buffer__new(events)", errno, "");
  auto reader = RingReader::Create(s->ringbuf_.get(), options.poll_interval_ms);
  if (!reader.ok()) return reader.status();
  s->reader_ = *std::move(reader);
  return std::unique_ptr<CpuSampler>(std::move(s));
}

absl::Status BpfCpuSampler::Start(int hz, Sink sink) {
  std::lock_guard<std::mutex> l(lifecycle_mu_);
  if (running_) return absl::FailedPreconditionError("CPU sampler already started");
  if (hz <= 0 || hz > kMaxHz) {
    return absl::InvalidArgumentError(absl::StrCat("hz must be in [1, ", kMaxHz, "], got ", hz));
  }
  if (!sink) return absl::InvalidArgumentError("sink is empty");
  absl::StatusOr<std::vector<int>> cpus = OnlineCpus();
  if (!cpus.ok()) return cpus.status();

  using Clock = BpfCpuSamplerOptions::Clock;
  bool tick = false;
  if (clock_ == Clock::kTick) {
    tick = true;  // Create() failed unless the tick program loaded
  } else if (clock_ == Clock::kAuto) {
    tick = tick_loaded_ && hz <= kTickMaxAutoHz;
    if (!tick_loaded_) {
      static std::once_flag logged;
      std::call_once(logged, [this] {
        fprintf(stderr,
                "pprof-sidecar: tick clock unavailable (%s): sampling with cpu-clock perf "
                "events\n",
                tick_unavailable_.c_str());
      });
    }
  }
  std::vector<UniqueFd> fds;
  std::vector<std::unique_ptr<bpf_link, LinkDeleter>> links;
  timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);  // bpf_ktime_get_ns's clock
  session_start_ns_ = static_cast<uint64_t>(now.tv_sec) * 1000000000ULL + now.tv_nsec;
  if (tick) {
    // A new schedule for every thread (generation), at this rate, before the program runs.
    skel_->bss->tick_period_ns = 1000000000ULL / static_cast<uint64_t>(hz);
    __atomic_fetch_add(&skel_->bss->tick_gen, 1, __ATOMIC_SEQ_CST);
    if (!tick_link_) {
      bpf_link* link =
          bpf_program__attach_tracepoint(skel_->progs.cpu_tick, "irq_vectors", "local_timer_entry");
      if (link == nullptr) {
        return ErrnoStatus("bpf_program__attach_tracepoint(irq_vectors/local_timer_entry)", errno,
                           "CAP_BPF and CAP_PERFMON (or root)");
      }
      tick_link_.reset(link);
    }
  }
  for (int cpu : tick ? std::vector<int>() : *cpus) {
    perf_event_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.size = sizeof(attr);
    attr.type = PERF_TYPE_SOFTWARE;
    attr.config = PERF_COUNT_SW_CPU_CLOCK;
    attr.sample_period = 1000000000ULL / static_cast<uint64_t>(hz);
    attr.freq = 0;
    attr.disabled = 1;  // enabled by the attach below
    int fd = static_cast<int>(syscall(__NR_perf_event_open, &attr, /*pid=*/-1, cpu, /*group_fd=*/-1,
                                      PERF_FLAG_FD_CLOEXEC));
    if (fd < 0) {
      return ErrnoStatus(absl::StrCat("perf_event_open(cpu-clock, cpu=", cpu, ")"), errno,
                         "CAP_PERFMON (or root)");
    }
    fds.emplace_back(fd);
    bpf_link* link = bpf_program__attach_perf_event(skel_->progs.cpu_sample, fd);
    if (link == nullptr) {
      return ErrnoStatus(absl::StrCat("bpf_program__attach_perf_event(cpu=", cpu, ")"), errno,
                         "CAP_BPF and CAP_PERFMON (or root)");
    }
    links.emplace_back(link);
  }
  cpus_opened_ += tick ? cpus->size() : fds.size();
  tick_running_ = tick;
  if (tick) __atomic_store_n(&skel_->bss->tick_enabled, 1, __ATOMIC_SEQ_CST);
  perf_fds_ = std::move(fds);
  links_ = std::move(links);
  sink_ = std::move(sink);
  running_ = true;
  reader_->Start();
  return absl::OkStatus();
}

void BpfCpuSampler::Flush() {
  if (running_.load()) reader_->Flush();
}

int BpfCpuSampler::HandleRecord(void* ctx, void* data, size_t size) {
  auto* self = static_cast<BpfCpuSampler*>(ctx);
  if (size < sizeof(cpu_sample_record)) return 0;
  const auto* rec = static_cast<const cpu_sample_record*>(data);
  // Left in the ring by a program run that raced with the previous Stop().
  if (rec->time_ns < self->session_start_ns_.load(std::memory_order_relaxed)) {
    self->after_stop_.fetch_add(1, std::memory_order_relaxed);
    return 0;
  }
  CpuSample s;
  s.pid = rec->pid;
  s.tid = rec->tid;
  s.time_ns = rec->time_ns;
  s.cpu = rec->cpu;
  // Header, stack bytes, then (at ips_offset) kernel ips and user ips; a record shorter than its
  // counts is clipped.
  const char* body = static_cast<const char*>(data) + sizeof(cpu_sample_record);
  const size_t body_len = size - sizeof(cpu_sample_record);
  const size_t stack_len = std::min<size_t>(rec->user_stack_len, body_len);
  s.user_stack.assign(body, stack_len);
  const size_t ips_off =
      std::min<size_t>(std::max<size_t>(rec->ips_offset, (stack_len + 7) / 8 * 8), body_len);
  const size_t nips = (body_len - ips_off) / sizeof(uint64_t);
  const size_t knr = std::min<size_t>({rec->kernel_nr, CPU_SAMPLER_MAX_FRAMES, nips});
  const size_t unr = std::min<size_t>({rec->user_nr, CPU_SAMPLER_MAX_FRAMES, nips - knr});
  std::vector<uint64_t> ips(knr + unr);
  if (!ips.empty()) memcpy(ips.data(), body + ips_off, ips.size() * sizeof(uint64_t));
  s.kernel_ips.assign(ips.begin(), ips.begin() + knr);
  s.user_ips.assign(ips.begin() + knr, ips.end());
  s.regs.ip = rec->user_ip;
  s.regs.sp = rec->user_sp;
  s.regs.bp = rec->user_bp;
  if (rec->uret_trampoline != 0) {
    s.regs.uret_trampoline = rec->uret_trampoline;
    s.regs.uret_returns.assign(
        rec->uret_returns,
        rec->uret_returns + std::min<uint32_t>(rec->uret_nr, CPU_SAMPLER_MAX_URET));
    RestoreUretReturns(s.regs, &s.user_ips);
  }
  self->bytes_copied_.fetch_add(stack_len, std::memory_order_relaxed);
  s.weight = std::max<uint32_t>(rec->weight, 1);
  s.in_kernel = (rec->flags & CPU_SAMPLE_F_IN_KERNEL) != 0;
  s.user_stack_error = (rec->flags & CPU_SAMPLE_F_USER_STACK_ERR) != 0;
  s.kernel_stack_error = (rec->flags & CPU_SAMPLE_F_KERNEL_STACK_ERR) != 0;
  s.fp_walk_scanned = (rec->flags & CPU_SAMPLE_F_FP_SCANNED) != 0;
  if ((rec->flags & CPU_SAMPLE_F_TICK) != 0 && !s.kernel_stack_error) self->StripTickFrames(&s);
  self->delivered_.fetch_add(1);
  self->sink_(s);
  return 0;
}

void BpfCpuSampler::StripTickFrames(CpuSample* s) const {
  // The tick's stack runs from the tracepoint through the hrtimer interrupt's handlers to its
  // entry stub; the frames after the stub are those of the interrupted kernel code (none when
  // the tick interrupted user mode).
  const TickKernelInfo& k = TickInfo();
  auto& ips = s->kernel_ips;
  auto stub = std::find_if(ips.begin(), ips.end(),
                           [&](uint64_t ip) { return ip >= k.irqentry_lo && ip < k.irqentry_hi; });
  if (stub == ips.end()) {
    // Not the path this was written for: the frames cannot be told apart, none is kept.
    tick_kstack_unstripped_.fetch_add(1, std::memory_order_relaxed);
    ips.clear();
    s->kernel_stack_error = true;
    return;
  }
  ips.erase(ips.begin(), stub + 1);
  s->in_kernel = !ips.empty();
}

absl::Status BpfCpuSampler::SetTargets(const std::vector<uint32_t>& tgids) {
  std::set<uint32_t> want(tgids.begin(), tgids.end());
  if (want.count(0)) return absl::InvalidArgumentError("tgid 0 is not a process");
  if (want.size() > kMaxTargets) {
    return absl::InvalidArgumentError(
        absl::StrCat("too many targets: ", want.size(), " > ", kMaxTargets));
  }
  std::lock_guard<std::mutex> l(targets_mu_);
  const int map_fd = bpf_map__fd(skel_->maps.targets);
  // Every change, complete or not, invalidates the program's cached verdicts (after the map
  // syscalls, which order it after the map's new content).
  struct BumpGeneration {
    __u64* gen;
    ~BumpGeneration() { __atomic_fetch_add(gen, 1, __ATOMIC_SEQ_CST); }
  } bump{&skel_->bss->targets_gen};
  for (auto it = targets_.begin(); it != targets_.end();) {
    if (want.count(*it)) {
      ++it;
      continue;
    }
    uint32_t key = *it;
    if (bpf_map_delete_elem(map_fd, &key) != 0 && errno != ENOENT) {
      return ErrnoStatus(absl::StrCat("bpf_map_delete_elem(targets, ", key, ")"), errno, "");
    }
    it = targets_.erase(it);
  }
  for (uint32_t tgid : want) {
    if (targets_.count(tgid)) continue;
    uint8_t one = 1;
    if (bpf_map_update_elem(map_fd, &tgid, &one, BPF_ANY) != 0) {
      return ErrnoStatus(absl::StrCat("bpf_map_update_elem(targets, ", tgid, ")"), errno, "");
    }
    targets_.insert(tgid);
  }
  return absl::OkStatus();
}

void BpfCpuSampler::Stop() {
  std::lock_guard<std::mutex> l(lifecycle_mu_);
  if (!running_) return;
  __atomic_store_n(&skel_->bss->tick_enabled, 0, __ATOMIC_SEQ_CST);
  links_.clear();  // detaches the program from every perf event
  perf_fds_.clear();
  // The links are gone; programs still running on other CPUs get 1 ms to commit their records.
  reader_->Stop(/*settle_us=*/1000);
  sink_ = nullptr;
  running_ = false;
}

SamplerStats BpfCpuSampler::stats() const {
  SamplerStats st;
  st.samples_delivered = delivered_.load();
  st.samples_after_stop = after_stop_.load();
  st.cpus = cpus_opened_.load();
  st.tick_clock = tick_running_.load();
  st.kernel_stack_errors += tick_kstack_unstripped_.load();
  st.bytes_copied = bytes_copied_.load();
  for (bpf_program* prog : {skel_->progs.cpu_sample, skel_->progs.cpu_tick}) {
    if (prog == skel_->progs.cpu_tick && !tick_loaded_) continue;
    bpf_prog_info info;
    memset(&info, 0, sizeof(info));
    uint32_t info_len = sizeof(info);
    if (bpf_obj_get_info_by_fd(bpf_program__fd(prog), &info, &info_len) == 0) {
      st.bpf_run_time_ns += info.run_time_ns;
      st.bpf_run_count += info.run_cnt;
    }
  }
  const int ncpus = libbpf_num_possible_cpus();
  if (ncpus <= 0) return st;
  // The counters live at the start of each CPU's scratch value (cpu_sampler_percpu_head).
  const size_t stride = (bpf_map__value_size(skel_->maps.scratch) + 7) / 8 * 8;
  std::vector<uint8_t> percpu(stride * static_cast<size_t>(ncpus));
  uint64_t sums[CPU_SAMPLER_CNT_NUM] = {};
  uint32_t zero = 0;
  if (stride >= sizeof(cpu_sampler_percpu_head) &&
      bpf_map_lookup_elem(bpf_map__fd(skel_->maps.scratch), &zero, percpu.data()) == 0) {
    for (int cpu = 0; cpu < ncpus; ++cpu) {
      cpu_sampler_percpu_head head;
      memcpy(&head, percpu.data() + stride * static_cast<size_t>(cpu), sizeof(head));
      for (uint32_t i = 0; i < CPU_SAMPLER_CNT_NUM; ++i) sums[i] += head.counters[i];
    }
  }
  st.samples_seen = sums[CPU_SAMPLER_CNT_SAMPLES_SEEN];
  st.dropped_ringbuf_full = sums[CPU_SAMPLER_CNT_DROPPED_RINGBUF_FULL];
  st.user_stack_errors = sums[CPU_SAMPLER_CNT_USER_STACK_ERRORS];
  st.kernel_stack_errors += sums[CPU_SAMPLER_CNT_KERNEL_STACK_ERRORS];
  st.tick_state_errors = sums[CPU_SAMPLER_CNT_TICK_STATE_ERRORS];
  st.stack_vma_lookups = sums[CPU_SAMPLER_CNT_VMA_LOOKUPS];
  st.user_stack_copy_errors = sums[CPU_SAMPLER_CNT_USER_STACK_COPY_ERRORS];
  st.copy_bounded_go = sums[CPU_SAMPLER_CNT_COPY_BOUND_GO];
  st.copy_bounded_vma = sums[CPU_SAMPLER_CNT_COPY_BOUND_VMA];
  static_assert(CPU_SAMPLER_STAGE_NUM == sizeof(st.stage_ns) / sizeof(st.stage_ns[0]),
                "SamplerStats::stage_ns");
  std::vector<uint64_t> values(static_cast<size_t>(ncpus));
  const int stage_fd = bpf_map__fd(skel_->maps.stage_ns);
  for (uint32_t i = 0; i < CPU_SAMPLER_STAGE_NUM; ++i) {
    if (bpf_map_lookup_elem(stage_fd, &i, values.data()) != 0) continue;
    for (uint64_t v : values) st.stage_ns[i] += v;
  }
  return st;
}

}  // namespace

absl::StatusOr<std::unique_ptr<CpuSampler>> NewBpfCpuSampler(const BpfCpuSamplerOptions& options) {
  return BpfCpuSampler::Create(options);
}

absl::StatusOr<std::unique_ptr<CpuSampler>> NewBpfCpuSampler() {
  return NewBpfCpuSampler(BpfCpuSamplerOptions());
}

}  // namespace pprof_sidecar
