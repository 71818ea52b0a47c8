#include "tests/e2e/e2e_util.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "tests/testutil/testutil.h"

namespace pprof_sidecar::testing {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

int64_t UnixNanosNow() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

}  // namespace

std::string AgentBinary() {
  const char* env = getenv("PPROF_SIDECAR_AGENT_BIN");
  return env && *env ? env : PPROF_SIDECAR_AGENT;
}

int PickFreePort() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  int port = -1;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  close(fd);
  return port;
}

absl::StatusOr<std::string> BuildGoCached(const std::string& version, const std::string& src_dir,
                                          const std::string& flags, const std::string& out) {
  // testutil's BuildGo shares one Go build cache per version across all tests.
  return BuildGo(version, src_dir, flags, out);
}

std::vector<std::string> ChartCapabilities() {
  return {"BPF", "PERFMON", "SYS_PTRACE", "SYSLOG"};
}

namespace {

int CapabilityNumber(const std::string& name) {
  static const std::pair<const char*, int> kCaps[] = {
      {"SYS_PTRACE", 19}, {"SYS_ADMIN", 21}, {"SYS_RESOURCE", 24}, {"SYSLOG", 34},
      {"PERFMON", 38},    {"BPF", 39}};
  for (const auto& [n, v] : kCaps) {
    if (name == n) return v;
  }
  return -1;
}

// In the forked child, before exec: the pod's conditions. Only async-signal-safe calls; returns
// false (the child then exits 126) if one cannot be applied.
bool ApplyPodConditions(const PodConditions& pod, const std::vector<int>& keep_caps,
                        int last_cap) {
  if (pod.hide_tracefs) {
    if (unshare(CLONE_NEWNS) != 0) return false;
    if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return false;
    for (const char* d : {"/sys/kernel/tracing", "/sys/kernel/debug"}) {
      struct stat st;
      if (stat(d, &st) == 0 && mount("none", d, "tmpfs", MS_RDONLY, "size=4k") != 0) return false;
    }
  }
  if (!pod.caps.empty()) {
    for (int cap = 0; cap <= last_cap; ++cap) {
      bool keep = false;
      for (int k : keep_caps) keep = keep || k == cap;
      if (!keep && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) return false;
    }
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
  }
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Child>> Child::Start(const std::vector<std::string>& argv,
                                                    const std::string& log_path,
                                                    const PodConditions* pod) {
  if (argv.empty()) return absl::InvalidArgumentError("empty argv");
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<int> keep_caps;
  int last_cap = 40;
  if (pod != nullptr) {
    for (const std::string& c : pod->caps) {
      const int n = CapabilityNumber(c);
      if (n < 0) return absl::InvalidArgumentError(absl::StrCat("unknown capability ", c));
      keep_caps.push_back(n);
    }
    std::ifstream f("/proc/sys/kernel/cap_last_cap");
    f >> last_cap;
  }
  int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    return absl::InternalError(absl::StrCat("open ", log_path, ": ", strerror(errno)));
  }
  pid_t pid = fork();
  if (pid < 0) {
    close(log_fd);
    return absl::InternalError(absl::StrCat("fork: ", strerror(errno)));
  }
  if (pid == 0) {
    setpgid(0, 0);
    int null_fd = open("/dev/null", O_RDONLY);
    dup2(null_fd, 0);
    dup2(log_fd, 1);
    dup2(log_fd, 2);
    if (pod != nullptr && !ApplyPodConditions(*pod, keep_caps, last_cap)) _exit(126);
    execv(args[0], args.data());
    _exit(127);
  }
  close(log_fd);
  setpgid(pid, pid);  // also from the parent, so Kill() works even before the child runs
  return std::unique_ptr<Child>(new Child(pid, log_path));
}

Child::~Child() { Kill(); }

std::optional<int> Child::WaitExit(absl::Duration timeout) {
  if (reaped_) return std::nullopt;
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    int st = 0;
    pid_t r = waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      reaped_ = true;
      return st;
    }
    if (r < 0 || absl::Now() >= deadline) return std::nullopt;
    absl::SleepFor(absl::Milliseconds(10));
  }
}

void Child::Kill() {
  if (reaped_) return;
  kill(-pid_, SIGKILL);
  kill(pid_, SIGKILL);
  int st;
  waitpid(pid_, &st, 0);
  reaped_ = true;
}

std::string Child::Log() const { return ReadFile(log_path_); }

absl::StatusOr<HttpResponse> HttpGet(int port, const std::string& path_and_query,
                                     absl::Duration timeout) {
  httplib::Client cli("127.0.0.1", port);
  const int64_t secs = absl::ToInt64Seconds(timeout);
  cli.set_connection_timeout(5, 0);
  cli.set_read_timeout(secs, 0);
  cli.set_write_timeout(5, 0);
  auto res = cli.Get(path_and_query.c_str());
  if (!res) {
    return absl::UnavailableError(absl::StrCat("GET 127.0.0.1:", port, path_and_query, ": ",
                                               httplib::to_string(res.error())));
  }
  HttpResponse r;
  r.status = res->status;
  r.body = res->body;
  r.content_type = res->get_header_value("Content-Type");
  r.x_go_pprof = res->get_header_value("X-Go-Pprof");
  r.content_disposition = res->get_header_value("Content-Disposition");
  r.nosniff = res->get_header_value("X-Content-Type-Options");
  return r;
}

absl::StatusOr<std::unique_ptr<Agent>> Agent::Start(const std::vector<std::string>& flags,
                                                    const std::string& dir) {
  PodConditions pod;
  pod.caps = ChartCapabilities();
  return Start(flags, dir, pod);
}

absl::StatusOr<std::unique_ptr<Agent>> Agent::Start(const std::vector<std::string>& flags,
                                                    const std::string& dir,
                                                    const PodConditions& pod) {
  std::vector<std::string> argv = {AgentBinary()};
  int port = -1;
  for (const auto& f : flags) {
    absl::string_view v = f;
    if (absl::ConsumePrefix(&v, "--listen_address=")) {
      size_t colon = v.rfind(':');
      if (colon == absl::string_view::npos || !absl::SimpleAtoi(v.substr(colon + 1), &port)) {
        return absl::InvalidArgumentError(absl::StrCat("bad ", f));
      }
    }
    argv.push_back(f);
  }
  if (port < 0) {
    port = PickFreePort();
    if (port <= 0) return absl::InternalError("no free port");
    argv.push_back(absl::StrCat("--listen_address=127.0.0.1:", port));
  }
  auto child = Child::Start(argv, absl::StrCat(dir, "/agent-", port, ".log"), &pod);
  if (!child.ok()) return child.status();
  std::unique_ptr<Agent> agent(new Agent(port, *std::move(child)));
  // Loading and verifying the BPF programs takes seconds of CPU, far longer on a loaded machine
  // (seen: > 20 s on 2 shared cores at load average 10).
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (absl::Now() < deadline) {
    if (agent->child_->WaitExit(absl::ZeroDuration())) {
      return absl::FailedPreconditionError(
          absl::StrCat("agent exited during startup; log:\n", agent->Log()));
    }
    auto r = agent->Get("/healthz", absl::Seconds(2));
    if (r.ok() && r->status == 200) return agent;
    absl::SleepFor(absl::Milliseconds(50));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("agent did not answer /healthz within 60 s; log:\n", agent->Log()));
}

absl::StatusOr<FetchedProfile> FetchProfile(int port, int seconds, const std::string& path) {
  FetchedProfile f;
  f.path = path;
  f.sent = absl::Now();
  auto r = HttpGet(port, absl::StrCat("/debug/pprof/profile?seconds=", seconds),
                   absl::Seconds(seconds + 60));
  f.received = absl::Now();
  if (!r.ok()) return r.status();
  if (r->status != 200) {
    return absl::InternalError(absl::StrCat("profile request answered ", r->status, " (",
                                            r->content_type, "): ", r->body));
  }
  if (r->content_type != "application/octet-stream") {
    return absl::InternalError(absl::StrCat("profile Content-Type \"", r->content_type, "\""));
  }
  if (r->content_disposition != "attachment; filename=\"profile\"" || r->nosniff != "nosniff") {
    return absl::InternalError(absl::StrCat("profile headers: Content-Disposition \"",
                                            r->content_disposition, "\", X-Content-Type-Options \"",
                                            r->nosniff, "\""));
  }
  if (r->body.size() < 2 || static_cast<unsigned char>(r->body[0]) != 0x1f ||
      static_cast<unsigned char>(r->body[1]) != 0x8b) {
    return absl::InternalError("profile body is not gzipped");
  }
  {
    std::ofstream out(path, std::ios::binary);
    out << r->body;
    if (!out) return absl::InternalError(absl::StrCat("writing ", path));
  }
  auto s = SummarizeProfile(path);
  if (!s.ok()) return s.status();
  f.summary = *std::move(s);
  return f;
}

std::optional<double> ProcessCpuSeconds(pid_t pid) {
  std::string stat = ReadFile(absl::StrCat("/proc/", pid, "/stat"));
  // comm may contain spaces and parentheses: fields resume after the last ')'.
  size_t rp = stat.rfind(')');
  if (rp == std::string::npos) return std::nullopt;
  std::vector<absl::string_view> f =
      absl::StrSplit(absl::string_view(stat).substr(rp + 1), ' ', absl::SkipEmpty());
  // f[0] is field 3 (state); utime and stime are fields 14 and 15.
  uint64_t ut, st;
  if (f.size() < 13 || !absl::SimpleAtoi(f[11], &ut) || !absl::SimpleAtoi(f[12], &st)) {
    return std::nullopt;
  }
  return static_cast<double>(ut + st) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

CpuMonitor::CpuMonitor(pid_t pid) : pid_(pid), thread_([this] { Loop(); }) {}

CpuMonitor::~CpuMonitor() {
  stop_ = true;
  thread_.join();
}

void CpuMonitor::Loop() {
  while (!stop_) {
    int64_t t0 = UnixNanosNow();
    auto cpu = ProcessCpuSeconds(pid_);
    int64_t t1 = UnixNanosNow();
    if (cpu) {
      std::lock_guard<std::mutex> l(mu_);
      readings_.emplace_back(t0 + (t1 - t0) / 2, *cpu);
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
}

std::optional<double> CpuMonitor::CpuSecondsBetween(int64_t from, int64_t to) const {
  std::lock_guard<std::mutex> l(mu_);
  auto at = [this](int64_t t) -> std::optional<double> {
    for (size_t i = 1; i < readings_.size(); ++i) {
      const auto& [ta, ca] = readings_[i - 1];
      const auto& [tb, cb] = readings_[i];
      if (ta <= t && t <= tb) {
        if (tb == ta) return ca;
        return ca + (cb - ca) * static_cast<double>(t - ta) / static_cast<double>(tb - ta);
      }
    }
    return std::nullopt;
  };
  auto a = at(from), b = at(to);
  if (!a || !b) return std::nullopt;
  return *b - *a;
}

std::vector<pid_t> PidsByComm(const std::string& comm) {
  std::vector<pid_t> out;
  DIR* d = opendir("/proc");
  if (!d) return out;
  while (dirent* e = readdir(d)) {
    int pid;
    if (!absl::SimpleAtoi(e->d_name, &pid)) continue;
    std::string c = ReadFile(absl::StrCat("/proc/", pid, "/comm"));
    if (absl::StripTrailingAsciiWhitespace(c) == comm) out.push_back(pid);
  }
  closedir(d);
  return out;
}

absl::StatusOr<std::string> RawExchange(int port, const std::string& bytes,
                                        absl::Duration timeout) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", strerror(errno)));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    int e = errno;
    close(fd);
    return absl::UnavailableError(absl::StrCat("connect: ", strerror(e)));
  }
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = send(fd, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may close early on garbage; read what it said
    off += n;
  }
  // Read one response: headers, then Content-Length bytes of body (or until close/timeout).
  std::string out;
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    size_t hdr_end = out.find("\r\n\r\n");
    if (hdr_end != std::string::npos) {
      size_t want = 0;
      std::string lower = absl::AsciiStrToLower(out.substr(0, hdr_end));
      size_t cl = lower.find("\r\ncontent-length:");
      if (cl != std::string::npos) {
        size_t eol = lower.find("\r\n", cl + 2);
        absl::SimpleAtoi(absl::StripAsciiWhitespace(lower.substr(cl + 17, eol - cl - 17)), &want);
      }
      if (out.size() >= hdr_end + 4 + want) break;
    }
    pollfd p{fd, POLLIN, 0};
    int ms = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (poll(&p, 1, std::max(ms, 1)) <= 0) break;
    char buf[4096];
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    out.append(buf, n);
  }
  close(fd);
  return out;
}

std::pair<int, int> GoFuncLines(const std::string& file, const std::string& name) {
  std::string text = ReadFile(file);
  int first = 0, last = 0, n = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++n;
    if (first == 0 && absl::StartsWith(line, absl::StrCat("func ", name, "("))) {
      first = n;
    } else if (first != 0 && line == "}") {
      last = n;
      break;
    }
  }
  return {first, last};
}

double Metric(const Agent& a, const std::string& name) {
  auto m = a.Get("/metrics");
  if (!m.ok()) return -1;
  for (absl::string_view line : absl::StrSplit(m->body, '\n')) {
    double v;
    if (absl::ConsumePrefix(&line, name + " ") && absl::SimpleAtod(line, &v)) return v;
  }
  return -1;
}

int TargetPort(const std::string& log) {
  for (int i = 0; i < 200; ++i) {
    std::ifstream f(log);
    std::string line;
    while (std::getline(f, line)) {
      int port = 0;
      if (absl::StartsWith(line, "port=") && absl::SimpleAtoi(line.substr(5), &port)) return port;
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  return 0;
}


}  // namespace pprof_sidecar::testing
