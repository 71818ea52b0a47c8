#include "tests/testutil/testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mutex>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace pprof_sidecar::testing {

std::string TestDataDir() { return PPROF_SIDECAR_TESTDATA; }

std::string MakeTempDir(const std::string& prefix) {
  const char* tmp = getenv("TMPDIR");
  std::string tmpl = absl::StrCat(tmp && *tmp ? tmp : "/tmp", "/", prefix, "-XXXXXX");
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) abort();
  return std::string(buf.data());
}

CommandResult RunCommand(const std::string& cmd) {
  CommandResult r;
  std::string full = cmd + " 2>&1";
  FILE* p = popen(full.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.output.append(buf, n);
  int st = pclose(p);
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

std::string GoVersionName(const std::string& version) {
  std::string n = "go" + version;
  for (char& ch : n) {
    if (ch == '.') ch = '_';
  }
  return n;
}

std::vector<std::string> GoVersions() {
  std::vector<std::string> out;
  for (const char* v : {"1.19", "1.21", "1.22", "1.23"}) {
    if (access(absl::StrCat("/usr/lib/go-", v, "/bin/go").c_str(), X_OK) == 0) out.push_back(v);
  }
  return out;
}

absl::StatusOr<std::string> BuildGo(const std::string& version, const std::string& src_dir,
                                    const std::string& flags, const std::string& out) {
  // A cache shared by all tests per Go version (Go's cache is safe for concurrent use): without
  // it every Go 1.21+ build recompiles the standard library.
  const char* tmp = getenv("TMPDIR");
  std::string cache = absl::StrCat(tmp && *tmp ? tmp : "/tmp", "/pprof-sidecar-gocache-", version);
  std::string cmd = absl::StrCat("cd '", src_dir, "' && GO111MODULE=off GOPATH=/usr/share/gocode",
                                 " GOFLAGS= GOCACHE='", cache, "' GOTOOLCHAIN=local /usr/lib/go-",
                                 version, "/bin/go build ", flags, " -o '", out, "' .");
  CommandResult r = RunCommand(cmd);
  if (r.exit_code != 0) {
    return absl::InternalError(absl::StrCat("go build failed: ", cmd, "\n", r.output));
  }
  return out;
}

absl::StatusOr<std::string> BuildNative(const std::vector<std::string>& srcs,
                                        const std::string& flags, const std::string& out) {
  bool cxx = false;
  std::string files;
  for (const auto& s : srcs) {
    if (s.size() > 3 && (s.substr(s.size() - 3) == ".cc" || s.substr(s.size() - 4) == ".cpp")) {
      cxx = true;
    }
    absl::StrAppend(&files, " '", s, "'");
  }
  std::string cmd = absl::StrCat(cxx ? "g++" : "gcc", " ", flags, files, " -o '", out, "'");
  CommandResult r = RunCommand(cmd);
  if (r.exit_code != 0) {
    return absl::InternalError(absl::StrCat("compile failed: ", cmd, "\n", r.output));
  }
  return out;
}

absl::StatusOr<std::string> PprofCheckTool() {
  static std::mutex mu;
  static std::string path;
  std::lock_guard<std::mutex> l(mu);
  if (!path.empty()) return path;
  std::string dir = MakeTempDir("pprofcheck");
  auto built = BuildGo("1.19", TestDataDir() + "/tools/pprofcheck", "", dir + "/pprofcheck");
  if (!built.ok()) return built.status();
  path = *built;
  return path;
}

}  // namespace pprof_sidecar::testing
