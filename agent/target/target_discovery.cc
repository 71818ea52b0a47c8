#include "agent/target/target_discovery.h"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace pprof_sidecar {
namespace {

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  std::ostringstream ss;
  ss << f.rdbuf();
  *out = ss.str();
  return true;
}

std::string Basename(const std::string& path) {
  std::string p = path;
  const std::string deleted = " (deleted)";
  if (p.size() > deleted.size() &&
      p.compare(p.size() - deleted.size(), deleted.size(), deleted) == 0) {
    p.resize(p.size() - deleted.size());
  }
  size_t slash = p.rfind('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

std::vector<pid_t> ListPids(const std::string& proc_root) {
  std::vector<pid_t> pids;
  DIR* d = opendir(proc_root.c_str());
  if (d == nullptr) return pids;
  while (struct dirent* e = readdir(d)) {
    int pid;
    if (absl::SimpleAtoi(e->d_name, &pid) && pid > 0) pids.push_back(pid);
  }
  closedir(d);
  std::sort(pids.begin(), pids.end());
  return pids;
}

}  // namespace

bool IsPauseOrInit(const std::string& comm) {
  static const std::set<std::string> kNames = {"pause", "tini",    "dumb-init", "catatonit",
                                               "init",  "systemd", "s6-svscan", "conmon"};
  return kNames.count(comm) > 0;
}

bool IsKnownSidecar(const std::string& comm) {
  static const std::set<std::string> kNames = {
      "kube-rbac-proxy", "envoy",        "pilot-agent",   "linkerd2-proxy", "linkerd-proxy",
      "istio-proxy",     "oauth2-proxy", "pprof-sidecar", "fluent-bit",     "vector"};
  return kNames.count(comm) > 0;
}

absl::StatusOr<ProcessInfo> ReadProcessInfo(pid_t pid, const std::string& proc_root) {
  ProcessInfo info;
  info.pid = pid;
  std::string base = absl::StrCat(proc_root, "/", pid);
  std::string stat;
  if (!ReadFile(base + "/stat", &stat) || stat.empty()) {
    return absl::NotFoundError(absl::StrCat("process ", pid, " not found (", base, "/stat)"));
  }
  // comm is in parentheses and may contain spaces or ')': split at the last ')'.
  size_t open = stat.find('('), close = stat.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close < open) {
    return absl::DataLossError(absl::StrCat("malformed ", base, "/stat"));
  }
  info.comm = stat.substr(open + 1, close - open - 1);
  std::vector<std::string> f = absl::StrSplit(stat.substr(close + 1), ' ', absl::SkipEmpty());
  // f[0] is field 3 (state); field N is f[N-3].
  if (f.size() < 22) return absl::DataLossError(absl::StrCat("short ", base, "/stat"));
  info.state = f[0].empty() ? '?' : f[0][0];
  int ppid = 0;
  (void)absl::SimpleAtoi(f[1], &ppid);
  info.ppid = ppid;
  (void)absl::SimpleAtoi(f[19], &info.start_time);
  (void)absl::SimpleAtoi(f[21], &info.rss_pages);
  char buf[4096];
  ssize_t n = readlink((base + "/exe").c_str(), buf, sizeof(buf) - 1);
  if (n > 0) info.exe.assign(buf, n);
  return info;
}

absl::Status CheckTargetReadable(pid_t pid, const std::string& proc_root) {
  // maps can be readable where the binaries are not: check both (exe is a ptrace-checked link,
  // like the map_files links the symbolizer opens).
  const std::string base = absl::StrCat(proc_root, "/", pid);
  std::string path = base + "/maps";
  FILE* f = fopen(path.c_str(), "r");
  char buf[256];
  bool ok = f != nullptr && fread(buf, 1, sizeof(buf), f) > 0;
  int err = errno;
  if (f != nullptr) fclose(f);
  if (ok) {
    path = base + "/exe";
    ok = readlink(path.c_str(), buf, sizeof(buf)) > 0;
    err = errno;
  }
  if (ok) return absl::OkStatus();
  // A process that exited meanwhile has no /proc entry, or (a zombie) empty maps and no exe:
  // that is not a missing capability.
  absl::StatusOr<ProcessInfo> now = ReadProcessInfo(pid, proc_root);
  if (!now.ok() || now->state == 'Z' || now->state == 'X') {
    return absl::NotFoundError(absl::StrCat("pid ", pid, " exited"));
  }
  return absl::PermissionDeniedError(absl::StrCat(
      "cannot read ", path, ": ", err ? strerror(err) : "empty",
      "; profiles will be unsymbolized: the agent needs CAP_SYS_PTRACE to read another "
      "process's memory maps, binaries and memory"));
}

namespace {

// --target_pid: that process, unless it is gone, a zombie, or (with a pinned start time) another
// process that reused the pid.
absl::StatusOr<Discovery> DiscoverGivenPid(const DiscoveryOptions& opts) {
  auto info = ReadProcessInfo(opts.target_pid, opts.proc_root);
  if (!info.ok()) {
    return absl::NotFoundError(absl::StrCat(
        "--target_pid=", opts.target_pid, ": ", info.status().message(),
        opts.target_start_time != 0 ? " (the target exited; --target_pid does not follow "
                                      "restarts: use --target_name for that)"
                                    : ""));
  }
  if (opts.target_start_time != 0 && info->start_time != opts.target_start_time) {
    return absl::NotFoundError(absl::StrCat(
        "--target_pid=", opts.target_pid, ": the target exited and pid ", opts.target_pid,
        " now belongs to another process (", info->comm,
        "), which is not profiled: --target_pid does not follow restarts (use --target_name "
        "for that)"));
  }
  if (info->state == 'Z' || info->state == 'X') {
    return absl::NotFoundError(absl::StrCat("--target_pid=", opts.target_pid, ": pid ",
                                            opts.target_pid, " (", info->comm,
                                            ") exited (a zombie, not reaped yet)"));
  }
  Discovery out;
  out.target = *info;
  out.explanation = absl::StrCat("pid ", opts.target_pid, " given by --target_pid");
  return out;
}

// Every process under proc_root that could be read, by pid.
std::vector<ProcessInfo> ReadAllProcesses(const std::string& proc_root) {
  std::vector<ProcessInfo> procs;
  for (pid_t pid : ListPids(proc_root)) {
    auto info = ReadProcessInfo(pid, proc_root);
    if (info.ok()) procs.push_back(*std::move(info));
  }
  return procs;
}

// `self` and its ancestors among `procs` (e.g. the shell that started us): never targets.
std::set<pid_t> SelfAndAncestors(pid_t self, const std::vector<ProcessInfo>& procs) {
  std::set<pid_t> related = {self};
  pid_t p = self;
  for (int i = 0; i < 64; ++i) {
    auto it =
        std::find_if(procs.begin(), procs.end(), [&](const ProcessInfo& x) { return x.pid == p; });
    if (it == procs.end() || it->ppid <= 0) break;
    related.insert(it->ppid);
    p = it->ppid;
  }
  return related;
}

// Compiles --target_name (POSIX extended syntax) into *re; InvalidArgument naming the flag.
absl::Status CompileTargetName(const std::string& target_name, std::regex* re) {
  try {
    *re = std::regex(target_name, std::regex::extended);
  } catch (const std::regex_error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("--target_name=", target_name, ": invalid regex: ", e.what()));
  }
  return absl::OkStatus();
}

// The rule of the header for one live, unrelated process: its comm or exe basename matches
// --target_name if given, else it is neither pid 1's pause/init nor a known sidecar.
bool IsCandidate(const ProcessInfo& p, const DiscoveryOptions& opts, const std::regex& name_re) {
  if (!opts.target_name.empty()) {
    return std::regex_match(p.comm, name_re) || std::regex_match(Basename(p.exe), name_re);
  }
  if (p.pid == 1 && (IsPauseOrInit(p.comm) || IsPauseOrInit(Basename(p.exe)))) return false;
  return !IsKnownSidecar(p.comm) && !IsKnownSidecar(Basename(p.exe));
}

// The NotFound error when no process qualifies.
absl::Status NoCandidateError(const DiscoveryOptions& opts) {
  return absl::NotFoundError(
      opts.target_name.empty()
          ? "no target process: nothing in this pid namespace besides pid 1's pause/init, the "
            "agent and known sidecars (is shareProcessNamespace: true set on the pod?)"
          : absl::StrCat("no process whose comm or executable name matches --target_name=",
                         opts.target_name));
}

// The largest resident set wins (ties: the oldest); the others are listed in the explanation.
// `candidates` is not empty.
Discovery ChooseAmong(std::vector<ProcessInfo> candidates, const DiscoveryOptions& opts) {
  std::stable_sort(candidates.begin(), candidates.end(),
                   [](const ProcessInfo& a, const ProcessInfo& b) {
                     if (a.rss_pages != b.rss_pages) return a.rss_pages > b.rss_pages;
                     return a.start_time < b.start_time;
                   });
  Discovery out;
  out.target = candidates[0];
  out.others.assign(candidates.begin() + 1, candidates.end());
  if (out.others.empty()) {
    out.explanation =
        absl::StrCat("pid ", out.target.pid, " (", out.target.comm, ") is the only candidate");
    return out;
  }
  std::vector<std::string> names;
  for (const auto& o : out.others) names.push_back(absl::StrCat(o.pid, "/", o.comm));
  out.explanation = absl::StrCat(
      "ambiguous: chose pid ", out.target.pid, " (", out.target.comm,
      ") with the largest resident set over ", absl::StrJoin(names, ", "),
      opts.target_name.empty()
          ? "; pass --target_pid or --target_name to choose"
          : absl::StrCat(": all match --target_name=", opts.target_name,
                         "; pass a narrower --target_name (it matches the whole comm or "
                         "executable name) or --target_pid to choose"));
  return out;
}

}  // namespace

absl::StatusOr<Discovery> DiscoverTarget(const DiscoveryOptions& opts) {
  if (opts.target_pid > 0) return DiscoverGivenPid(opts);
  const pid_t self = opts.self_pid ? opts.self_pid : getpid();
  const std::vector<ProcessInfo> procs = ReadAllProcesses(opts.proc_root);
  const std::set<pid_t> related = SelfAndAncestors(self, procs);
  std::regex name_re;
  if (!opts.target_name.empty()) {
    absl::Status s = CompileTargetName(opts.target_name, &name_re);
    if (!s.ok()) return s;
  }
  std::vector<ProcessInfo> candidates;
  for (const auto& p : procs) {
    if (p.exe.empty() || p.state == 'Z') continue;  // kernel thread, exited, or not readable
    if (related.count(p.pid)) continue;
    if (IsCandidate(p, opts, name_re)) candidates.push_back(p);
  }
  if (candidates.empty()) return NoCandidateError(opts);
  return ChooseAmong(std::move(candidates), opts);
}

}  // namespace pprof_sidecar
