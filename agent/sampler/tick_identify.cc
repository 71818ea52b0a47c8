#include "agent/sampler/tick_identify.h"

#include <algorithm>
#include <map>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace pprof_sidecar {
namespace {

// Whether expirations (sorted) of one timer lie on a grid of `tick_ns` with one exact step.
bool OnTickGrid(const std::vector<int64_t>& expires, int64_t tick_ns) {
  if (expires.size() < 3) return false;
  bool exact = false;
  for (size_t i = 1; i < expires.size(); ++i) {
    const int64_t d = expires[i] - expires[i - 1];
    if (d <= 0 || d % tick_ns != 0) return false;
    exact = exact || d == tick_ns;
  }
  return exact;
}

}  // namespace

absl::StatusOr<TickIdentity> IdentifyTick(
    const std::vector<std::vector<HrtimerExpiration>>& per_cpu, int64_t tick_ns) {
  if (tick_ns <= 0) return absl::InvalidArgumentError("tick length must be positive");
  std::set<uint64_t> fns;
  for (const auto& cpu : per_cpu) {
    std::map<std::pair<uint64_t, uint64_t>, std::vector<int64_t>> by_timer;
    for (const HrtimerExpiration& e : cpu) by_timer[{e.timer, e.fn}].push_back(e.expires);
    for (auto& [key, expires] : by_timer) {
      std::sort(expires.begin(), expires.end());
      expires.erase(std::unique(expires.begin(), expires.end()), expires.end());
      if (OnTickGrid(expires, tick_ns)) fns.insert(key.second);
    }
  }
  if (fns.empty()) {
    return absl::NotFoundError(absl::StrCat("no hrtimer expired on the ", tick_ns / 1000,
                                            " us tick grid of a busy CPU"));
  }
  if (fns.size() > 1) {
    return absl::FailedPreconditionError(
        absl::StrCat(fns.size(), " periodic hrtimers expire on the tick grid (functions ",
                     absl::StrJoin(fns, ", ", [](std::string* out, uint64_t fn) {
                       absl::StrAppend(out, absl::Hex(fn));
                     }),
                     "): cannot tell which is the tick"));
  }
  TickIdentity id;
  id.fn = *fns.begin();
  std::map<uint64_t, int> stubs;
  for (const auto& cpu : per_cpu) {
    for (const HrtimerExpiration& e : cpu) {
      if (e.fn == id.fn && e.stub != 0) ++stubs[e.stub];
    }
  }
  int best = 0;
  for (const auto& [stub, n] : stubs) {
    if (n > best) {
      best = n;
      id.stub = stub;
    }
  }
  return id;
}

}  // namespace pprof_sidecar
