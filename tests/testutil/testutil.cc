#include "tests/testutil/testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>
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
  return {"1.19", "1.20", "1.21", "1.22", "1.23", "1.24", "1.25", "1.26", "1.27"};
}

std::vector<std::string> OldestAndNewestGo() {
  std::vector<std::string> v = GoVersions();
  return {v.front(), v.back()};
}

std::string GoMatrixDir() {
  const char* d = getenv("PPROF_SIDECAR_GO_MATRIX");
  return d && *d ? d : "/opt/pprof-sidecar/go";
}

absl::StatusOr<std::string> GoTool(const std::string& version) {
  const std::string go = absl::StrCat(GoMatrixDir(), "/", version, "/bin/go");
  if (access(go.c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no Go ", version, " toolchain at ", go,
        ": scripts/install-deps.sh installs the matrix (Debian packages; Go module proxy "
        "toolchains fetched with GOTOOLCHAIN=go1.N.P), see its output for why it could not"));
  }
  return go;
}

std::string GoCacheDir(const std::string& version) {
  const char* tmp = getenv("TMPDIR");
  return absl::StrCat(tmp && *tmp ? tmp : "/tmp", "/pprof-sidecar-gocache-", version);
}

absl::StatusOr<std::string> BuildGo(const std::string& version, const std::string& src_dir,
                                    const std::string& flags, const std::string& out) {
  // One build per (version, source, flags) per test process; later requests copy it.
  static std::mutex mu;
  static std::map<std::string, std::string> built;
  const std::string key = absl::StrCat(version, "\n", src_dir, "\n", flags);
  std::lock_guard<std::mutex> l(mu);
  auto it = built.find(key);
  if (it != built.end()) {
    if (it->second == out) return out;
    CommandResult cp = RunCommand(absl::StrCat("cp -f '", it->second, "' '", out, "'"));
    if (cp.exit_code == 0) return out;
  }
  absl::StatusOr<std::string> go = GoTool(version);
  if (!go.ok()) return go.status();
  // A cache shared by all tests per Go version (Go's cache is safe for concurrent use): without
  // it every Go 1.20+ build recompiles the standard library.
  const std::string cache = GoCacheDir(version);
  std::string cmd = absl::StrCat("cd '", src_dir, "' && GO111MODULE=off GOPATH=/usr/share/gocode",
                                 " GOFLAGS= GOCACHE='", cache, "' GOTOOLCHAIN=local GOROOT= ", *go,
                                 " build ", flags, " -o '", out, "' .");
  CommandResult r = RunCommand(cmd);
  if (r.exit_code != 0) {
    return absl::InternalError(absl::StrCat("go build failed: ", cmd, "\n", r.output));
  }
  built[key] = out;
  return out;
}

absl::StatusOr<std::string> BuildGoModule(const std::string& version, const std::string& src_dir,
                                          const std::string& flags, const std::string& out) {
  absl::StatusOr<std::string> go = GoTool(version);
  if (!go.ok()) return go.status();
  const std::string cache = GoCacheDir(version);
  std::string cmd = absl::StrCat("cd '", src_dir, "' && GO111MODULE=on GOFLAGS=-mod=mod GOCACHE='",
                                 cache, "' GOMODCACHE='", GoMatrixDir(),
                                 "/mod' GOTOOLCHAIN=local GOROOT= GOPATH='", GoMatrixDir(),
                                 "/gopath' ", *go, " build ", flags, " -o '", out, "' .");
  CommandResult r = RunCommand(cmd);
  if (r.exit_code != 0) {
    return absl::UnavailableError(absl::StrCat(
        "go build of the module in ", src_dir,
        " failed (if the output below shows a download error, its modules could not be fetched "
        "from the Go module proxy): ",
        cmd, "\n", r.output));
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
