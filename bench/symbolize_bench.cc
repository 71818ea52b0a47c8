// Times cold and warm symbolization of a (large) Go binary, the way the agent does it.
//
// Usage: symbolize_bench [--evict] [--pcs=N] BINARY
//
// Two measurements, each on N pseudo-random PCs spread uniformly over the binary's Go text
// (fixed seed, so runs are comparable):
//  1. "pclntab": ElfFile::Open + GoPclntab::FromElf, then Symbolize() of every PC, once cold
//     (first pass right after parsing) and once warm (same PCs again).
//  2. "process": the agent's real path. BINARY is started under ptrace (it stops at exec, before
//     running any of its code), and a fresh ProcessSymbolizer resolves the same PCs through
//     /proc/PID/maps and /proc/PID/map_files, cold (first session: opens and parses the binary)
//     and warm (second session: cached binary).
// --evict drops BINARY's pages from the page cache (posix_fadvise DONTNEED) before each cold
// measurement, so "cold" also includes reading the file from disk.
// Prints one "KEY value" line per number (ms unless stated) for bench/run.sh to parse.
#include <fcntl.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "agent/symbolize/elf_file.h"
#include "agent/symbolize/go_pclntab.h"
#include "agent/symbolize/process_symbolizer.h"

namespace pprof_sidecar {
namespace {

double MsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

void Evict(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  fdatasync(fd);
  posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  close(fd);
}

// Symbolizes every pc; returns how many resolved to at least one line.
size_t SymbolizeAll(const GoPclntab& tab, const std::vector<uint64_t>& pcs, size_t* lines) {
  size_t ok = 0;
  for (uint64_t pc : pcs) {
    auto r = tab.Symbolize(pc);
    if (r.ok() && !r->empty()) {
      ++ok;
      *lines += r->size();
    }
  }
  return ok;
}

size_t ResolveAll(ProcessSymbolizer::Session* s, const std::vector<uint64_t>& pcs) {
  size_t ok = 0;
  for (uint64_t pc : pcs) {
    if (!s->ResolveUser(pc, /*is_return_address=*/false).lines.empty()) ++ok;
  }
  return ok;
}

// Starts `path` stopped right after execve (PTRACE_TRACEME); returns its pid or -1.
pid_t SpawnStopped(const std::string& path) {
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    ptrace(PTRACE_TRACEME, 0, nullptr, nullptr);
    int devnull = open("/dev/null", O_RDWR);
    if (devnull >= 0) {
      dup2(devnull, 0);
      dup2(devnull, 1);
    }
    execl(path.c_str(), path.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  if (waitpid(pid, &status, 0) != pid || !WIFSTOPPED(status)) return -1;
  return pid;
}

int Main(int argc, char** argv) {
  bool evict = false;
  size_t npcs = 10000;
  std::string path;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--evict") {
      evict = true;
    } else if (a.rfind("--pcs=", 0) == 0) {
      npcs = std::strtoul(a.c_str() + 6, nullptr, 10);
    } else {
      path = a;
    }
  }
  if (path.empty() || npcs == 0) {
    fprintf(stderr, "usage: symbolize_bench [--evict] [--pcs=N] BINARY\n");
    return 2;
  }

  // 1. Direct pclntab path.
  if (evict) Evict(path);
  auto t0 = std::chrono::steady_clock::now();
  auto elf = ElfFile::Open(path);
  if (!elf.ok()) {
    fprintf(stderr, "%s\n", std::string(elf.status().message()).c_str());
    return 1;
  }
  double open_ms = MsSince(t0);
  auto t1 = std::chrono::steady_clock::now();
  auto tab = GoPclntab::FromElf(**elf);
  if (!tab.ok()) {
    fprintf(stderr, "%s\n", std::string(tab.status().message()).c_str());
    return 1;
  }
  double parse_ms = MsSince(t1);
  std::mt19937_64 rng(42);
  std::uniform_int_distribution<uint64_t> dist((*tab)->min_pc(), (*tab)->max_pc() - 1);
  std::vector<uint64_t> pcs(npcs);
  for (auto& pc : pcs) pc = dist(rng);

  size_t lines = 0;
  auto t2 = std::chrono::steady_clock::now();
  size_t ok_cold = SymbolizeAll(**tab, pcs, &lines);
  double cold_ms = MsSince(t2);
  double cold_total_ms = MsSince(t0);
  size_t lines_warm = 0;
  auto t3 = std::chrono::steady_clock::now();
  SymbolizeAll(**tab, pcs, &lines_warm);
  double warm_ms = MsSince(t3);

  printf("BINARY %s\n", path.c_str());
  printf("FILE_MB %.1f\n", (*elf)->data().size() / 1048576.0);
  printf("GO_FUNCS %zu\n", (*tab)->num_funcs());
  printf("PCS %zu\n", npcs);
  printf("PCS_SYMBOLIZED %zu\n", ok_cold);
  printf("LINES_PER_PC %.2f\n", ok_cold ? static_cast<double>(lines) / ok_cold : 0.0);
  printf("PCLNTAB_OPEN_MS %.2f\n", open_ms);
  printf("PCLNTAB_PARSE_MS %.2f\n", parse_ms);
  printf("PCLNTAB_COLD_SYMBOLIZE_MS %.2f\n", cold_ms);
  printf("PCLNTAB_COLD_TOTAL_MS %.2f\n", cold_total_ms);
  printf("PCLNTAB_WARM_SYMBOLIZE_MS %.2f\n", warm_ms);
  tab->reset();
  elf->reset();

  // 2. The agent's path through a live process.
  pid_t pid = SpawnStopped(path);
  if (pid < 0) {
    fprintf(stderr, "cannot start %s under ptrace\n", path.c_str());
    return 1;
  }
  if (evict) Evict(path);
  ProcessSymbolizer symbolizer;
  auto t4 = std::chrono::steady_clock::now();
  auto s1 = symbolizer.NewSession(pid);
  size_t pok_cold = ResolveAll(s1.get(), pcs);
  double pcold_ms = MsSince(t4);
  auto t5 = std::chrono::steady_clock::now();
  auto s2 = symbolizer.NewSession(pid);
  size_t pok_warm = ResolveAll(s2.get(), pcs);
  double pwarm_ms = MsSince(t5);
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  printf("PROCESS_PCS_SYMBOLIZED %zu %zu\n", pok_cold, pok_warm);
  printf("PROCESS_COLD_MS %.2f\n", pcold_ms);
  printf("PROCESS_WARM_MS %.2f\n", pwarm_ms);
  return 0;
}

}  // namespace
}  // namespace pprof_sidecar

int main(int argc, char** argv) { return pprof_sidecar::Main(argc, argv); }
