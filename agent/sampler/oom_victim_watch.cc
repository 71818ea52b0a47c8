#include "agent/sampler/oom_victim_watch.h"

#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "agent/sampler/libbpf_util.h"
#include "agent/sampler/ring_reader.h"
#include "bpf/oom_victim.h"
#include "bpf/oom_victim.skel.h"

namespace pprof_sidecar {
namespace {

constexpr char kPrivileges[] = "CAP_BPF and CAP_PERFMON";

// Whether tracepoint mark_victim passes the victim's task_struct (Linux 6.8+; before, its pid).
bool MarkVictimPassesTask() {
  struct btf* btf = btf__load_vmlinux_btf();
  if (btf == nullptr) return false;
  bool task = false;
  const int id = btf__find_by_name_kind(btf, "btf_trace_mark_victim", BTF_KIND_TYPEDEF);
  const struct btf_type* t = id > 0 ? btf__type_by_id(btf, btf__resolve_type(btf, id)) : nullptr;
  if (t != nullptr && btf_is_ptr(t)) t = btf__type_by_id(btf, t->type);
  if (t != nullptr && btf_is_func_proto(t) && btf_vlen(t) >= 2) {
    // Parameter 0 is the tracepoint's data pointer; 1 is the first TP_PROTO argument.
    const struct btf_type* a = btf__type_by_id(btf, btf__resolve_type(btf, btf_params(t)[1].type));
    task = a != nullptr && btf_is_ptr(a);
  }
  btf__free(btf);
  return task;
}

uint64_t BoottimeNs() {
  struct timespec ts;
  clock_gettime(CLOCK_BOOTTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace

struct OomVictimWatch::Impl {
  Callback cb;
  uint64_t ns_per_tick = 10000000;
  SkeletonPtr<oom_victim_bpf, oom_victim_bpf__destroy> skel;
  std::unique_ptr<RingReader> reader;

  static int OnRecord(void* ctx, void* data, size_t size) {
    auto* self = static_cast<Impl*>(ctx);
    if (size < sizeof(oom_victim_event)) return 0;
    oom_victim_event e;
    memcpy(&e, data, sizeof(e));
    OomVictim v;
    v.pid = static_cast<pid_t>(e.ns_tgid);
    v.host_pid = static_cast<pid_t>(e.host_tgid);
    v.start_time = e.start_boottime_ns / self->ns_per_tick;
    const uint64_t now = BoottimeNs();
    v.latency_ns = now > e.event_boottime_ns ? now - e.event_boottime_ns : 0;
    v.comm.assign(e.comm, strnlen(e.comm, sizeof(e.comm)));
    self->cb(v);
    return 0;
  }
};

OomVictimWatch::OomVictimWatch(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

OomVictimWatch::~OomVictimWatch() {
  if (impl_ && impl_->reader) impl_->reader->Stop();
}

uint64_t OomVictimWatch::dropped() const {
  return impl_->skel->bss ? __atomic_load_n(&impl_->skel->bss->dropped, __ATOMIC_RELAXED) : 0;
}

absl::StatusOr<std::unique_ptr<OomVictimWatch>> OomVictimWatch::Start(Callback cb,
                                                                      OomVictimWatchOptions opts) {
  auto impl = std::make_unique<Impl>();
  impl->cb = std::move(cb);
  const long hz = sysconf(_SC_CLK_TCK);
  if (hz > 0) impl->ns_per_tick = 1000000000ull / static_cast<uint64_t>(hz);
  absl::StatusOr<PidNamespaceId> pidns = AgentPidNamespace();
  if (!pidns.ok()) return pidns.status();
  auto skel =
      OpenSkeleton<oom_victim_bpf, oom_victim_bpf__destroy>(oom_victim_bpf__open, "oom_victim BPF");
  if (!skel.ok()) return skel.status();
  impl->skel = *std::move(skel);
  impl->skel->rodata->agent_pidns_inum = static_cast<uint32_t>(pidns->ino);
  const bool tp = !opts.force_fentry && MarkVictimPassesTask();
  bpf_program__set_autoload(impl->skel->progs.on_mark_victim, tp);
  bpf_program__set_autoload(impl->skel->progs.on_mark_oom_victim, !tp);
  const std::string point = tp ? "tp_btf/mark_victim" : "fentry/mark_oom_victim";
  if (int err = oom_victim_bpf__load(impl->skel.get()); err != 0) {
    return ErrnoStatus(absl::StrCat("load oom_victim BPF program (", point, ")"), -err,
                       kPrivileges);
  }
  if (int err = oom_victim_bpf__attach(impl->skel.get()); err != 0) {
    return ErrnoStatus(absl::StrCat("attach ", point), -err, kPrivileges);
  }
  auto reader =
      RingReader::Open(impl->skel->maps.events, "oom events", &Impl::OnRecord, impl.get(), 1000);
  if (!reader.ok()) return reader.status();
  impl->reader = *std::move(reader);
  impl->reader->Start();
  std::unique_ptr<OomVictimWatch> w(new OomVictimWatch(std::move(impl)));
  w->attach_point_ = point;
  return w;
}

}  // namespace pprof_sidecar
