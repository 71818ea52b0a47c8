#include "tests/testutil/memory_cgroup.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

namespace pprof_sidecar::testing {
namespace {

constexpr long kCgroup2Magic = 0x63677270;

absl::Status WriteTo(const std::string& path, const std::string& v) {
  std::ofstream f(path);
  f << v;
  f.close();
  if (!f) return absl::InternalError(absl::StrCat("write ", v, " to ", path, " failed"));
  return absl::OkStatus();
}

std::string ReadAll(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

absl::StatusOr<std::unique_ptr<MemoryCgroup>> MemoryCgroup::Create(const std::string& name,
                                                                   uint64_t limit_bytes) {
  struct statfs sf;
  const bool v2 = statfs("/sys/fs/cgroup", &sf) == 0 && sf.f_type == kCgroup2Magic;
  const std::string dir = v2 ? "/sys/fs/cgroup/" + name : "/sys/fs/cgroup/memory/" + name;
  if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return absl::FailedPreconditionError(
        absl::StrCat("mkdir ", dir, ": ", strerror(errno), " (needs root and a memory cgroup)"));
  }
  std::unique_ptr<MemoryCgroup> cg(new MemoryCgroup(dir, v2));
  absl::Status st =
      WriteTo(dir + (v2 ? "/memory.max" : "/memory.limit_in_bytes"), absl::StrCat(limit_bytes));
  if (!st.ok()) return st;
  if (v2) {
    WriteTo(dir + "/memory.swap.max", "0").IgnoreError();
  } else {
    WriteTo(dir + "/memory.swappiness", "0").IgnoreError();
  }
  return cg;
}

std::vector<std::string> MemoryCgroup::Wrap(const std::vector<std::string>& argv) const {
  std::vector<std::string> out = {
      "/bin/sh", "-c", absl::StrCat("echo $$ > ", dir_, "/cgroup.procs && exec \"$@\""), "sh"};
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

uint64_t MemoryCgroup::OomKills() const {
  const std::string text = ReadAll(dir_ + (v2_ ? "/memory.events" : "/memory.oom_control"));
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    uint64_t v = 0;
    if (absl::ConsumePrefix(&line, "oom_kill ") && absl::SimpleAtoi(line, &v)) return v;
  }
  return 0;
}

MemoryCgroup::~MemoryCgroup() {
  for (int i = 0; i < 50; ++i) {
    const std::string procs = ReadAll(dir_ + "/cgroup.procs");
    if (procs.empty()) break;
    for (absl::string_view p : absl::StrSplit(procs, '\n', absl::SkipEmpty())) {
      int pid = 0;
      if (absl::SimpleAtoi(p, &pid)) kill(pid, SIGKILL);
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  rmdir(dir_.c_str());
}

}  // namespace pprof_sidecar::testing
