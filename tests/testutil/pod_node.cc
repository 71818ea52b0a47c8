// Linked into every privileged test binary: the whole test process runs where the agent is
// deployed, in a mount namespace without tracefs and debugfs (an empty read-only tmpfs covers
// /sys/kernel/tracing and /sys/kernel/debug, whatever the host has mounted there) on a node with
// kernel.kptr_restrict=1. Code that came to depend on either would fail these tests on any
// machine, not only on one where they happen to be missing.
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"

namespace {

class PodNodeEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    // Before any test starts a thread: a multi-threaded process cannot unshare its mounts.
    if (unshare(CLONE_NEWNS) != 0 || mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr)) {
      fprintf(stderr, "pod_node: cannot enter a private mount namespace: %s\n", strerror(errno));
      abort();
    }
    for (const char* d : {"/sys/kernel/tracing", "/sys/kernel/debug"}) {
      struct stat st;
      if (stat(d, &st) == 0 && mount("none", d, "tmpfs", MS_RDONLY, "size=4k") != 0) {
        fprintf(stderr, "pod_node: cannot cover %s: %s\n", d, strerror(errno));
        abort();
      }
    }
    std::ifstream in(kKptr);
    std::getline(in, kptr_before_);
    std::ofstream(kKptr) << 1;
  }
  void TearDown() override {
    if (!kptr_before_.empty()) std::ofstream(kKptr) << kptr_before_;
  }

 private:
  static constexpr const char* kKptr = "/proc/sys/kernel/kptr_restrict";
  std::string kptr_before_;
};

::testing::Environment* const kPodNode =
    ::testing::AddGlobalTestEnvironment(new PodNodeEnvironment);

}  // namespace
