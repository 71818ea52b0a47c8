#include "agent/goprofile/threadcreate_source.h"

#include "absl/strings/str_cat.h"

namespace pprof_sidecar {

absl::StatusOr<std::vector<CountStack>> ReadThreadCreateStacks(MemoryReader& mem,
                                                               const GoBinary& bin, uint64_t bias) {
  absl::StatusOr<GoLayout> l = bin.layout();
  if (!l.ok()) return l.status();
  if (!bin.sched_vars().ok()) return bin.sched_vars().status();
  absl::StatusOr<uint64_t> mp = mem.ReadU64(bin.sched_vars()->allm + bias);
  if (!mp.ok()) return mp.status();
  std::vector<CountStack> out;
  std::vector<uint64_t> stk(l->m_createstack_len);
  for (uint64_t m = *mp; m != 0;) {
    if (out.size() >= 100000 || m % 8 != 0) {
      return absl::DataLossError(absl::StrCat("runtime.allm list broken at 0x", absl::Hex(m)));
    }
    if (absl::Status st = mem.Read(m + l->m_createstack, stk.data(), stk.size() * 8); !st.ok()) {
      return st;
    }
    // Go 1.23+ report the whole fixed-size record (zeros included), earlier releases its
    // prefix up to the first zero (runtime.StackRecord.Stack).
    CountStack cs;
    for (uint64_t pc : stk) {
      if (pc == 0 && bin.minor() < 23) break;
      cs.pcs.push_back(pc);
    }
    out.push_back(std::move(cs));
    absl::StatusOr<uint64_t> next = mem.ReadU64(m + l->m_alllink);
    if (!next.ok()) return next.status();
    m = *next;
  }
  return out;
}

ThreadCreateSource::ThreadCreateSource(std::shared_ptr<GoBinaryCache> cache,
                                       ProcessSymbolizer* symbolizer)
    : cache_(std::move(cache)), symbolizer_(symbolizer) {
  info_.name = "threadcreate";
  info_.description = "Stack traces that led to the creation of new OS threads";
  info_.debug_levels = {0, 1, 2};
  info_.filename = "threadcreate";
  info_.error_prefix = "Could not get threadcreate profile";
}

absl::Status ThreadCreateSource::Availability(const std::optional<ProcessInfo>& target) const {
  if (!target) return absl::UnavailableError("no target process");
  return cache_->Check(target->pid);
}

absl::StatusOr<ProfileResponse> ThreadCreateSource::Collect(const ProfileRequest& req) {
  if (!req.target) return absl::UnavailableError("no target process");
  absl::StatusOr<GoProcess> p = cache_->Open(req.target->pid);
  absl::StatusOr<std::vector<CountStack>> stacks =
      p.ok() ? ReadThreadCreateStacks(*p->mem, *p->bin, p->bias)
             : absl::StatusOr<std::vector<CountStack>>(p.status());
  if (!stacks.ok()) {
    errors_.fetch_add(1);
    return absl::Status(stacks.status().code(),
                        absl::StrCat("pid ", req.target->pid, ": ", stacks.status().message()));
  }
  const GoImage img{p->bin.get(), p->bias, p->exe};
  ProfileResponse resp;
  if (req.debug > 0) {
    resp.body = CountProfileText(img, "threadcreate", *stacks);
    resp.content_type = "text/plain; charset=utf-8";
  } else {
    absl::StatusOr<std::string> pb = CountProfileProto(
        img, req.target->pid, symbolizer_, "threadcreate", *stacks, absl::Now(), req.comments);
    if (!pb.ok()) {
      errors_.fetch_add(1);
      return pb.status();
    }
    resp.body = std::move(*pb);
  }
  profiles_.fetch_add(1);
  return resp;
}

void ThreadCreateSource::WriteMetrics(const std::optional<ProcessInfo>& target,
                                      MetricsWriter* w) const {
  w->Counter("pprof_sidecar_threadcreate_profiles_total", "Threadcreate profiles served.",
             static_cast<double>(profiles_.load()));
  w->Counter("pprof_sidecar_threadcreate_profile_errors_total",
             "Threadcreate profile requests failed.", static_cast<double>(errors_.load()));
}

}  // namespace pprof_sidecar
