// A memory cgroup created by a test (root): cgroup v1 (/sys/fs/cgroup/memory/<name>) or v2
// (/sys/fs/cgroup/<name> on a unified hierarchy), with a memory limit, into which a child puts
// itself before exec (Wrap). The destructor kills what is left in it and removes it.
#ifndef PPROF_SIDECAR_TESTS_TESTUTIL_MEMORY_CGROUP_H_
#define PPROF_SIDECAR_TESTS_TESTUTIL_MEMORY_CGROUP_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace pprof_sidecar::testing {

class MemoryCgroup {
 public:
  static absl::StatusOr<std::unique_ptr<MemoryCgroup>> Create(const std::string& name,
                                                              uint64_t limit_bytes);
  ~MemoryCgroup();
  // argv that joins this cgroup, then execs `argv`.
  std::vector<std::string> Wrap(const std::vector<std::string>& argv) const;
  const std::string& dir() const { return dir_; }
  bool v2() const { return v2_; }
  // OOM kills in this cgroup so far (v1 memory.oom_control / v2 memory.events "oom_kill").
  uint64_t OomKills() const;

 private:
  MemoryCgroup(std::string dir, bool v2) : dir_(std::move(dir)), v2_(v2) {}
  std::string dir_;
  bool v2_;
};

}  // namespace pprof_sidecar::testing

#endif  // PPROF_SIDECAR_TESTS_TESTUTIL_MEMORY_CGROUP_H_
