// BPF implementation of CpuSampler: the scheduler tick (`cpu_tick`) or per-CPU software cpu-clock
// perf events (`cpu_sample`) run a program of bpf/cpu_sampler.bpf.c that filters by target tgid
// and emits records to a ring buffer; a reader thread converts them to StackSample for the sink.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <linux/perf_event.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "agent/sampler/cpu_sampler.h"
#include "agent/sampler/libbpf_util.h"
#include "agent/sampler/ring_reader.h"
#include "agent/sampler/tick_identify.h"
#include "bpf/cpu_sampler.h"
#include "bpf/cpu_sampler.skel.h"
#include "bpf/cpu_sampler_compat.skel.h"
#ifdef PPROF_SIDECAR_SAMPLER_BENCH
#include "agent/sampler/cpu_sampler_bench.h"
#endif

namespace pprof_sidecar {
namespace {

constexpr int kMaxHz = 100000;
// The auto clock uses the tick up to this rate: no kernel configuration ticks slower (HZ=100).
constexpr int kTickMaxAutoHz = 100;
constexpr size_t kMaxTargets = 1024;  // max_entries of the `targets` map

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
  if (!in) return ErrnoStatus(absl::StrCat("open(", path, ")"), errno);
  std::stringstream ss;
  ss << in.rdbuf();
  absl::StatusOr<std::vector<int>> cpus = ParseCpuList(ss.str());
  if (!cpus.ok())
    return absl::Status(cpus.status().code(), absl::StrCat(path, ": ", cpus.status().message()));
  return cpus;
}

// Opens the default program or its compat build. Both come from one source with the same maps,
// programs and variables, so the default skeleton's struct describes either object.
cpu_sampler_bpf* OpenCpuSamplerSkeleton(bool compat) {
  static_assert(sizeof(*cpu_sampler_bpf().rodata) == sizeof(*cpu_sampler_compat_bpf().rodata),
                "the compat build's read-only variables differ");
  static_assert(sizeof(*cpu_sampler_bpf().bss) == sizeof(*cpu_sampler_compat_bpf().bss),
                "the compat build's variables differ");
  auto* obj = static_cast<cpu_sampler_bpf*>(calloc(1, sizeof(cpu_sampler_bpf)));
  if (obj == nullptr) {
    errno = ENOMEM;
    return nullptr;
  }
  int err = cpu_sampler_bpf__create_skeleton(obj);
  if (err == 0 && compat) {
    obj->skeleton->data =
        const_cast<void*>(cpu_sampler_compat_bpf__elf_bytes(&obj->skeleton->data_sz));
  }
  if (err == 0) err = bpf_object__open_skeleton(obj->skeleton, nullptr);
  if (err != 0) {
    cpu_sampler_bpf__destroy(obj);
    errno = -err;
    return nullptr;
  }
  return obj;
}

// Kernel features the default program needs that this kernel lacks, each with what the compat
// build does without it.
std::vector<std::string> MissingKernelFeatures() {
  std::vector<std::string> missing;
  auto helper = [&missing](bpf_func_id id, const char* what) {
    if (libbpf_probe_bpf_helper(BPF_PROG_TYPE_PERF_EVENT, id, nullptr) != 1) {
      missing.push_back(what);
    }
  };
  if (libbpf_probe_bpf_map_type(BPF_MAP_TYPE_TASK_STORAGE, nullptr) != 1) {
    missing.push_back(
        "task storage (5.11): tick-clock thread state in an LRU hash of 16384 threads");
  }
  helper(BPF_FUNC_get_current_task_btf,
         "bpf_get_current_task_btf (5.11): task fields read with bpf_probe_read_kernel");
  helper(BPF_FUNC_task_pt_regs,
         "bpf_task_pt_regs (5.15): user registers located at the top of the kernel stack");
  helper(BPF_FUNC_find_vma,
         "bpf_find_vma (5.17): stack copies of non-Go threads not bounded by their mapping");
  helper(BPF_FUNC_loop,
         "bpf_loop (5.17): the frame-pointer walk reads every frame from user memory, no "
         "frame-record scan where rbp is not a frame pointer");
  return missing;
}

// Sets more of the program's read-only variables between open and load (the bench build's
// switches); `compat`: the compat build of the program is open.
using BeforeLoad = std::function<void(cpu_sampler_bpf* skel, bool compat)>;

class BpfCpuSampler : public CpuSampler {
 public:
  // `before_load` (may be empty) runs on every open of the program, before it loads.
  static absl::StatusOr<std::unique_ptr<CpuSampler>> Create(const BpfCpuSamplerOptions& options,
                                                            BeforeLoad before_load);

  ~BpfCpuSampler() override {
    Stop();
    tick_link_.reset();
  }

  absl::Status Start(int hz, Sink sink) override;
  absl::Status SetTargets(const std::vector<uint32_t>& tgids) override;
  absl::Status SetSampleTargets(const std::vector<SampleTarget>& targets) override;
  void Stop() override;
  void Flush() override;
  bool running() const override { return running_.load(); }
  SamplerStats stats() const override;
  SamplerInfo info() const override { return info_; }
  // The loaded program: its maps (the bench build reads its stage clocks from them).
  const cpu_sampler_bpf& skeleton() const { return *skel_; }

 private:
  BpfCpuSampler() = default;
  static int HandleRecord(void* ctx, void* data, size_t size);
  // Strips the tick interrupt's own frames from a tick sample's kernel stack.
  void StripTickFrames(StackSample* s) const;
  // Opens, configures and loads the program (the tick program too when `tick`) into skel_.
  absl::Status Load(const BpfCpuSamplerOptions& options, bool compat, bool tick, uint32_t rb);
  // Attaches the loaded tick program, learns which hrtimer is the tick and checks that the
  // program runs at the tick.
  absl::Status AttachTick();
  // Records hrtimer expirations while spinning for `spin`, and tells which is the tick.
  absl::StatusOr<TickIdentity> LearnTick(int64_t tick_ns, std::chrono::milliseconds spin);
  // Ticks the tick program has seen while enabled, over all CPUs.
  uint64_t TicksSeen() const;
  // Attaches cpu_sample to a cpu-clock perf event of this CPU once, then detaches it.
  absl::Status ProvePerfEvent();
  bpf_program* TickProgram() const { return tick_ ? skel_->progs.cpu_tick : nullptr; }

  BeforeLoad before_load_;
  SkeletonPtr<cpu_sampler_bpf, cpu_sampler_bpf__destroy> skel_;
  BpfCpuSamplerOptions::Clock clock_ = BpfCpuSamplerOptions::Clock::kAuto;
  bool tick_ = false;  // the tick program is loaded and attached
  SamplerInfo info_;
  std::atomic<bool> tick_running_{false};
  // The tick program's link: attached when the sampler is created and kept until destruction
  // (detaching waits for RCU grace periods, ~70 ms); between windows the program is disabled
  // (tick_enabled) and records older than session_start_ns_ are dropped.
  BpfLinkPtr tick_link_;
  // The return address into the interrupt entry stub, after which a kernel-mode tick's kernel
  // stack holds the interrupted code's frames (0: unknown; those frames are then dropped).
  uint64_t tick_stub_ret_ = 0;
  std::atomic<uint64_t> session_start_ns_{0};
  std::unique_ptr<RingReader> reader_;
  uint32_t user_stack_bytes_ = 0;

  std::mutex lifecycle_mu_;  // serializes Start/Stop
  std::atomic<bool> running_{false};
  std::vector<ScopedFd> perf_fds_;
  std::vector<BpfLinkPtr> links_;
  Sink sink_;

  std::mutex targets_mu_;
  std::map<uint32_t, GoLabelFields> targets_;  // what the `targets` map holds

  std::atomic<uint64_t> delivered_{0};
  std::atomic<uint64_t> bytes_copied_{0};
  std::atomic<uint64_t> cpus_opened_{0};
  mutable std::atomic<uint64_t> tick_kstack_unstripped_{0};
  std::atomic<uint64_t> after_stop_{0};
};

constexpr char kTickAttach[] = "tp_btf/hrtimer_expire_entry";

// A software cpu-clock perf event on `cpu` with period `period_ns`, created disabled (attaching a
// program enables it).
absl::StatusOr<ScopedFd> OpenCpuClock(int cpu, uint64_t period_ns) {
  perf_event_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.size = sizeof(attr);
  attr.type = PERF_TYPE_SOFTWARE;
  attr.config = PERF_COUNT_SW_CPU_CLOCK;
  attr.sample_period = period_ns;
  attr.disabled = 1;
  ScopedFd fd(static_cast<int>(syscall(__NR_perf_event_open, &attr, /*pid=*/-1, cpu,
                                       /*group_fd=*/-1, PERF_FLAG_FD_CLOEXEC)));
  if (fd.get() < 0) {
    return ErrnoStatus(absl::StrCat("perf_event_open(cpu-clock, cpu=", cpu, ")"), errno,
                       "CAP_PERFMON (or root)");
  }
  return fd;
}

// Attaches `prog` to the perf event `fd` (of `cpu`).
absl::StatusOr<BpfLinkPtr> AttachToPerfEvent(bpf_program* prog, const ScopedFd& fd, int cpu) {
  BpfLinkPtr link(bpf_program__attach_perf_event(prog, fd.get()));
  if (!link) {
    return ErrnoStatus(absl::StrCat("bpf_program__attach_perf_event(cpu=", cpu, ")"), errno,
                       "CAP_BPF and CAP_PERFMON (or root)");
  }
  return link;
}

// Spins the calling thread in user mode for `d` or until `done()`.
template <typename F>
void SpinFor(std::chrono::milliseconds d, F done) {
  const auto deadline = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < deadline && !done()) {
    for (volatile int i = 0; i < 100000; i = i + 1) {
    }
  }
}

// 1/HZ in ns: the resolution of the tick-updated clock.
int64_t TickNs() {
  timespec res;
  if (clock_getres(CLOCK_MONOTONIC_COARSE, &res) != 0) return 0;
  return static_cast<int64_t>(res.tv_sec) * 1000000000 + res.tv_nsec;
}

struct TickLearnBuf {
  uint32_t n;
  uint32_t pad;
  cpu_sampler_tick_obs obs[CPU_SAMPLER_TICK_LEARN];
};

uint64_t BpfCpuSampler::TicksSeen() const {
  uint64_t sum = 0;
  for (const cpu_sampler_percpu_head& h :
       PerCpuValues<cpu_sampler_percpu_head>(skel_->maps.scratch, 0)) {
    sum += h.counters[CPU_SAMPLER_CNT_TICKS];
  }
  return sum;
}

absl::Status BpfCpuSampler::Load(const BpfCpuSamplerOptions& options, bool compat, bool tick,
                                 uint32_t rb) {
  absl::StatusOr<PidNamespaceId> pidns = AgentPidNamespace();
  if (!pidns.ok()) return pidns.status();
  tick_link_.reset();
  skel_.reset();
  auto skel = OpenSkeleton<cpu_sampler_bpf, cpu_sampler_bpf__destroy>(
      [compat] { return OpenCpuSamplerSkeleton(compat); }, "the BPF CPU sampler");
  if (!skel.ok()) return skel.status();
  skel_ = *std::move(skel);
  auto* ro = skel_->rodata;
  ro->pidns_dev = pidns->dev;
  ro->pidns_ino = pidns->ino;
  ro->user_stack_copy_bytes = options.user_stack_bytes;
  ro->copy_bound = (options.bound_copy_vma ? CPU_SAMPLER_BOUND_VMA : 0u) |
                   (options.bound_copy_go ? CPU_SAMPLER_BOUND_GO_G : 0u);
  ro->user_fp_walk = options.user_frame_pointer_walk ? CPU_SAMPLER_MAX_FRAMES : 0;
  ro->wakeup_bytes = std::min(options.wakeup_bytes, rb / 4);
  // The frame-record scan needs bpf_loop.
  ro->fp_seed_scan = options.scan_for_frame_record && !compat ? 1 : 0;
  if (before_load_) before_load_(skel_.get(), compat);
  if (int err = bpf_map__set_max_entries(skel_->maps.events, rb); err != 0) {
    return ErrnoStatus("bpf_map__set_max_entries(events)", -err);
  }
  bpf_program__set_autoload(skel_->progs.cpu_tick, tick);
  if (int err = cpu_sampler_bpf__load(skel_.get()); err != 0) {
    return ErrnoStatus(absl::StrCat("loading the ", compat ? "compat " : "", "BPF CPU sampler",
                                    tick ? " with its tick program" : ""),
                       -err, "CAP_BPF and CAP_PERFMON (or root)");
  }
  tick_ = tick;
  return absl::OkStatus();
}

absl::StatusOr<TickIdentity> BpfCpuSampler::LearnTick(int64_t tick_ns,
                                                      std::chrono::milliseconds spin) {
  auto* bss = skel_->bss;
  const int ncpus = libbpf_num_possible_cpus();
  std::vector<uint8_t> zeros((bpf_map__value_size(skel_->maps.tick_learn) + 7) / 8 * 8 *
                             static_cast<size_t>(std::max(ncpus, 1)));
  uint32_t zero = 0;
  if (bpf_map_update_elem(bpf_map__fd(skel_->maps.tick_learn), &zero, zeros.data(), BPF_ANY) != 0) {
    return ErrnoStatus("bpf_map_update_elem(tick_learn)", errno);
  }
  __atomic_store_n(&bss->learn_tgid, static_cast<uint32_t>(getpid()), __ATOMIC_SEQ_CST);
  __atomic_store_n(&bss->tick_enabled, 1, __ATOMIC_SEQ_CST);
  SpinFor(spin, [] { return false; });
  __atomic_store_n(&bss->tick_enabled, 0, __ATOMIC_SEQ_CST);
  __atomic_store_n(&bss->learn_tgid, 0, __ATOMIC_SEQ_CST);
  std::vector<std::vector<HrtimerExpiration>> per_cpu;
  for (const TickLearnBuf& b : PerCpuValues<TickLearnBuf>(skel_->maps.tick_learn, 0)) {
    auto& cpu = per_cpu.emplace_back();
    for (uint32_t i = 0; i < std::min<uint32_t>(b.n, CPU_SAMPLER_TICK_LEARN); ++i) {
      const cpu_sampler_tick_obs& o = b.obs[i];
      cpu.push_back({o.timer, o.fn, o.expires, o.stub});
    }
  }
  return IdentifyTick(per_cpu, tick_ns);
}

absl::Status BpfCpuSampler::AttachTick() {
  bpf_link* link = bpf_program__attach_trace(skel_->progs.cpu_tick);
  if (link == nullptr) {
    return ErrnoStatus(absl::StrCat("attaching ", kTickAttach), errno,
                       "CAP_BPF and CAP_PERFMON (or root)");
  }
  tick_link_.reset(link);
  auto* bss = skel_->bss;
  // Learning: every hrtimer expiration is recorded while this thread spins in user mode; the tick
  // expires on the 1/HZ grid of every busy CPU, this one at least. A busy machine can crowd the
  // record (the last CPU_SAMPLER_TICK_LEARN expirations of each CPU): then again, longer.
  const int64_t tick_ns = TickNs();
  if (tick_ns <= 0) return absl::UnavailableError("clock_getres(CLOCK_MONOTONIC_COARSE) failed");
  absl::StatusOr<TickIdentity> id = absl::UnknownError("not tried");
  for (int attempt = 0; attempt < 3 && !id.ok(); ++attempt) {
    id = LearnTick(tick_ns, std::chrono::milliseconds(std::max<int64_t>(60, 12 * tick_ns / 1000000)
                                                      << attempt));
  }
  if (!id.ok()) {
    tick_link_.reset();
    return absl::UnavailableError(
        absl::StrCat("identifying the tick among hrtimers: ", id.status().message()));
  }
  bss->tick_fn = id->fn;
  tick_stub_ret_ = id->stub;
  // Proof that the program now runs at the tick: enabled with no period (nothing is sampled).
  bss->tick_period_ns = 0;
  const uint64_t before = TicksSeen();
  __atomic_store_n(&bss->tick_enabled, 1, __ATOMIC_SEQ_CST);
  SpinFor(std::chrono::milliseconds(std::max<int64_t>(60, 12 * tick_ns / 1000000)),
          [&] { return TicksSeen() > before; });
  __atomic_store_n(&bss->tick_enabled, 0, __ATOMIC_SEQ_CST);
  if (TicksSeen() == before) {
    tick_link_.reset();
    return absl::UnavailableError(absl::StrCat(kTickAttach, " did not run at the tick"));
  }
  return absl::OkStatus();
}

absl::Status BpfCpuSampler::ProvePerfEvent() {
  const int cpu = std::max(0, sched_getcpu());
  absl::StatusOr<ScopedFd> fd = OpenCpuClock(cpu, /*period_ns=*/10000000);
  if (!fd.ok()) return fd.status();
  return AttachToPerfEvent(skel_->progs.cpu_sample, *fd, cpu).status();
}

absl::StatusOr<std::unique_ptr<CpuSampler>> BpfCpuSampler::Create(
    const BpfCpuSamplerOptions& options, BeforeLoad before_load) {
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
  using Clock = BpfCpuSamplerOptions::Clock;
  using Variant = BpfCpuSamplerOptions::Variant;
  std::unique_ptr<BpfCpuSampler> s(new BpfCpuSampler());
  s->user_stack_bytes_ = options.user_stack_bytes;
  s->before_load_ = std::move(before_load);
  s->clock_ = options.clock;
  bool compat = options.variant == Variant::kCompat;
  if (options.variant == Variant::kAuto) {
    s->info_.reduced = MissingKernelFeatures();
    compat = !s->info_.reduced.empty();
  }
  s->info_.program_variant = compat ? "compat" : "default";

  // The tick program when it loads, attaches and fires; else (auto) the perf clock alone.
  if (options.clock != Clock::kPerfCpuClock) {
    absl::Status st = s->Load(options, compat, /*tick=*/true, rb);
    if (st.ok()) st = s->AttachTick();
    if (st.ok()) {
      s->info_.tick_attach = kTickAttach;
    } else {
      s->tick_ = false;
      if (options.clock == Clock::kTick) {
        return absl::FailedPreconditionError(
            absl::StrCat("tick clock unavailable: ", st.message()));
      }
      s->info_.tick_unavailable = std::string(st.message());
    }
  } else {
    s->info_.tick_unavailable = "not requested (perf clock chosen)";
  }
  if (!s->tick_) {
    if (absl::Status st = s->Load(options, compat, /*tick=*/false, rb); !st.ok()) return st;
  }
  if (absl::Status st = s->ProvePerfEvent(); !st.ok()) return st;
  s->info_.clock = s->tick_ ? "tick" : "perf";
  auto reader = RingReader::Open(s->skel_->maps.events, "events", &BpfCpuSampler::HandleRecord,
                                 s.get(), options.poll_interval_ms);
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
  // Create() failed for kTick unless the tick program is attached.
  const bool tick = tick_ && (clock_ == Clock::kTick || hz <= kTickMaxAutoHz);
  std::vector<ScopedFd> fds;
  std::vector<BpfLinkPtr> links;
  timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);  // bpf_ktime_get_ns's clock
  session_start_ns_ = static_cast<uint64_t>(now.tv_sec) * 1000000000ULL + now.tv_nsec;
  if (tick) {
    // A new schedule for every thread (generation), at this rate, before the program runs.
    skel_->bss->tick_period_ns = 1000000000ULL / static_cast<uint64_t>(hz);
    __atomic_fetch_add(&skel_->bss->tick_gen, 1, __ATOMIC_SEQ_CST);
  }
  for (int cpu : tick ? std::vector<int>() : *cpus) {
    absl::StatusOr<ScopedFd> fd = OpenCpuClock(cpu, 1000000000ULL / static_cast<uint64_t>(hz));
    if (!fd.ok()) return fd.status();
    absl::StatusOr<BpfLinkPtr> link = AttachToPerfEvent(skel_->progs.cpu_sample, *fd, cpu);
    if (!link.ok()) return link.status();
    fds.push_back(*std::move(fd));
    links.push_back(*std::move(link));
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
  StackSample s;
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
  s.go_labels = rec->go_labels;
  if ((rec->flags & CPU_SAMPLE_F_TICK) != 0 && !s.kernel_stack_error) self->StripTickFrames(&s);
  self->delivered_.fetch_add(1);
  self->sink_(s);
  return 0;
}

void BpfCpuSampler::StripTickFrames(StackSample* s) const {
  // The tick's stack runs from the tick's handler through the timer interrupt to its entry stub;
  // the frames after the stub are those of the interrupted kernel code.
  auto& ips = s->kernel_ips;
  auto stub = tick_stub_ret_ == 0 ? ips.end() : std::find(ips.begin(), ips.end(), tick_stub_ret_);
  if (stub == ips.end()) {
    // The frames cannot be told apart: none is kept.
    tick_kstack_unstripped_.fetch_add(1, std::memory_order_relaxed);
    ips.clear();
    s->kernel_stack_error = true;
    return;
  }
  ips.erase(ips.begin(), stub + 1);
}

absl::Status BpfCpuSampler::SetTargets(const std::vector<uint32_t>& tgids) {
  std::vector<SampleTarget> targets;
  for (uint32_t tgid : tgids) targets.push_back({tgid, {}});
  return SetSampleTargets(targets);
}

absl::Status BpfCpuSampler::SetSampleTargets(const std::vector<SampleTarget>& targets) {
  std::map<uint32_t, GoLabelFields> want;
  for (const SampleTarget& t : targets) {
    if (t.tgid == 0) return absl::InvalidArgumentError("tgid 0 is not a process");
    want[t.tgid] = t.go.enabled() ? t.go : GoLabelFields();
  }
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
    if (want.count(it->first)) {
      ++it;
      continue;
    }
    uint32_t key = it->first;
    if (bpf_map_delete_elem(map_fd, &key) != 0 && errno != ENOENT) {
      return ErrnoStatus(absl::StrCat("bpf_map_delete_elem(targets, ", key, ")"), errno);
    }
    it = targets_.erase(it);
  }
  for (const auto& [tgid, go] : want) {
    auto it = targets_.find(tgid);
    if (it != targets_.end() && it->second == go) continue;
    cpu_sampler_target value{};
    value.go_m_curg = go.m_curg;
    value.go_g_labels = go.g_labels;
    uint32_t key = tgid;
    if (bpf_map_update_elem(map_fd, &key, &value, BPF_ANY) != 0) {
      return ErrnoStatus(absl::StrCat("bpf_map_update_elem(targets, ", tgid, ")"), errno);
    }
    targets_[tgid] = go;
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
  for (bpf_program* prog : {skel_->progs.cpu_sample, TickProgram()}) {
    if (prog == nullptr) continue;
    bpf_prog_info info;
    memset(&info, 0, sizeof(info));
    uint32_t info_len = sizeof(info);
    if (bpf_obj_get_info_by_fd(bpf_program__fd(prog), &info, &info_len) == 0) {
      st.bpf_run_time_ns += info.run_time_ns;
      st.bpf_run_count += info.run_cnt;
    }
  }
  // The counters live at the start of each CPU's scratch value (cpu_sampler_percpu_head).
  uint64_t sums[CPU_SAMPLER_CNT_NUM] = {};
  for (const cpu_sampler_percpu_head& head :
       PerCpuValues<cpu_sampler_percpu_head>(skel_->maps.scratch, 0)) {
    for (uint32_t i = 0; i < CPU_SAMPLER_CNT_NUM; ++i) sums[i] += head.counters[i];
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
  return st;
}

}  // namespace

absl::StatusOr<std::unique_ptr<CpuSampler>> NewBpfCpuSampler(const BpfCpuSamplerOptions& options) {
  return BpfCpuSampler::Create(options, nullptr);
}

#ifdef PPROF_SIDECAR_SAMPLER_BENCH
absl::StatusOr<std::unique_ptr<CpuSampler>> NewBpfCpuSamplerForBench(
    const BpfCpuSamplerOptions& options, const BpfCpuSamplerBenchKnobs& knobs) {
  return BpfCpuSampler::Create(options, [knobs](cpu_sampler_bpf* skel, bool compat) {
    auto* ro = skel->rodata;
    if (ro->user_fp_walk != 0) {
      ro->user_fp_walk =
          static_cast<uint32_t>(std::clamp(knobs.user_fp_max_frames, 1, CPU_SAMPLER_MAX_FRAMES));
    }
    ro->own_fp_walk = knobs.own_fp_walk ? 1 : 0;
    ro->stage_timing = knobs.stage_timing ? 1 : 0;
    ro->null_program = knobs.null_program ? 1 : 0;
    ro->verdict_cache = knobs.cache_filter_verdict ? 1 : 0;
    ro->walk_in_copy = knobs.walk_frames_in_copy && !compat ? 1 : 0;
  });
}

std::array<uint64_t, kBenchStages> BenchStageNs(const CpuSampler& sampler) {
  static_assert(CPU_SAMPLER_STAGE_NUM == kBenchStages, "kBenchStages");
  const std::vector<uint64_t> sums = PerCpuSums(
      static_cast<const BpfCpuSampler&>(sampler).skeleton().maps.stage_ns, CPU_SAMPLER_STAGE_NUM);
  std::array<uint64_t, kBenchStages> out{};
  std::copy(sums.begin(), sums.end(), out.begin());
  return out;
}
#endif

absl::StatusOr<std::unique_ptr<CpuSampler>> NewBpfCpuSampler() {
  return NewBpfCpuSampler(BpfCpuSamplerOptions());
}

}  // namespace pprof_sidecar
