// Goroutine profile cost: the agent's CPU per profile (debug=0/1/2) of a running Go target next
// to the target's own /debug/pprof/goroutine on the same target, or one profile printed.
//
//   goroutine_bench --pid P --debug N            prints the agent's profile of P
//   goroutine_bench --pid P --port Q [--reps R]  agent CPU ms per profile (this process's
//       CPU time) vs the target's CPU ms per request of its own endpoint (its /proc/P/stat
//       utime+stime across R requests), each debug level
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "agent/goprofile/goroutine_source.h"

namespace {

using pprof_sidecar::GoBinaryCache;
using pprof_sidecar::GoroutineSource;
using pprof_sidecar::ProfileRequest;

double SelfCpuMs() {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
         (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

double ProcCpuMs(pid_t pid) {
  std::ifstream f(absl::StrCat("/proc/", pid, "/stat"));
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const size_t close = s.rfind(')');
  std::vector<std::string> fields = absl::StrSplit(s.substr(close + 2), ' ');
  // utime, stime are fields 14, 15 (1-based), i.e. 11, 12 after the comm's ')' and state.
  const double ticks = std::stod(fields[11]) + std::stod(fields[12]);
  return ticks * 1e3 / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// The target's own endpoint, fetched with curl (its CPU is what is measured, not curl's).
void FetchOwn(int port, int debug) {
  const std::string cmd = absl::StrCat("curl -s -o /dev/null 'http://127.0.0.1:", port,
                                       "/debug/pprof/goroutine?debug=", debug, "'");
  if (system(cmd.c_str()) != 0) fprintf(stderr, "curl failed\n");
}

}  // namespace

int main(int argc, char** argv) {
  pid_t pid = 0;
  int debug = -1, port = 0, reps = 10;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--pid") pid = atoi(argv[i + 1]);
    if (a == "--debug") debug = atoi(argv[i + 1]);
    if (a == "--port") port = atoi(argv[i + 1]);
    if (a == "--reps") reps = atoi(argv[i + 1]);
  }
  pprof_sidecar::ProcessSymbolizer symbolizer;
  GoroutineSource src(std::make_shared<GoBinaryCache>(), &symbolizer);
  ProfileRequest req;
  auto info = pprof_sidecar::ReadProcessInfo(pid);
  if (!info.ok()) {
    fprintf(stderr, "%s\n", std::string(info.status().message()).c_str());
    return 1;
  }
  req.target = *info;
  if (port == 0) {
    req.debug = debug < 0 ? 1 : debug;
    auto r = src.Collect(req);
    if (!r.ok()) {
      fprintf(stderr, "%s\n", std::string(r.status().message()).c_str());
      return 1;
    }
    fwrite(r->body.data(), 1, r->body.size(), stdout);
    return 0;
  }
  printf("debug\tagent_cpu_ms_per_profile\ttarget_cpu_ms_per_own_profile\tgoroutines\n");
  for (int d : {0, 1, 2}) {
    req.debug = d;
    const double a0 = SelfCpuMs();
    for (int i = 0; i < reps; ++i) {
      if (!src.Collect(req).ok()) return 1;
    }
    const double agent = (SelfCpuMs() - a0) / reps;
    const double t0 = ProcCpuMs(pid);
    for (int i = 0; i < reps; ++i) FetchOwn(port, d);
    const double own = (ProcCpuMs(pid) - t0) / reps;
    pprof_sidecar::GoProcess proc;
    auto snap = src.Snapshot(pid, &proc);
    printf("%d\t%.2f\t%.2f\t%zu\n", d, agent, own, snap.ok() ? snap->goroutines.size() : 0);
  }
  return 0;
}
