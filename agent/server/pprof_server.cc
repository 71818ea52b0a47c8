#include "agent/server/pprof_server.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace pprof_sidecar {
namespace {

// Go's profiles that this agent does not produce (yet): named so users get a precise answer
// instead of "Unknown profile".
const char* const kNotYetProfiles[] = {"goroutine", "threadcreate", "block", "mutex", "trace"};

// Lanes (HttpServer): cheap requests, lookups, and profile windows each have their own workers.
enum Lane { kControlLane = 0, kQueryLane = 1, kWindowLane = 2 };

// Error responses exactly as net/http/pprof's serveError writes them.
void ServeError(HttpResponse* res, int status, const std::string& text) {
  res->status = status;
  res->RemoveHeader("Content-Disposition");
  res->SetHeader("X-Go-Pprof", "1");
  res->SetHeader("X-Content-Type-Options", "nosniff");
  res->SetContent(text + "\n", "text/plain; charset=utf-8");
}

std::string HtmlEscape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '<':
        o += "&lt;";
        break;
      case '>':
        o += "&gt;";
        break;
      case '&':
        o += "&amp;";
        break;
      case '"':
        o += "&quot;";
        break;
      default:
        o += c;
    }
  }
  return o;
}

bool ReadWholeFile(const std::string& path, std::string* out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  std::ostringstream ss;
  ss << f.rdbuf();
  *out = ss.str();
  return true;
}

// The first value of each query parameter (Go's r.FormValue). Error: a malformed query.
struct Query {
  std::map<std::string, std::string> first;
  std::optional<std::string> Get(const std::string& k) const {
    auto it = first.find(k);
    if (it == first.end()) return std::nullopt;
    return it->second;
  }
};
absl::StatusOr<Query> ParseRequestQuery(const HttpRequest& req) {
  auto kv = ParseQuery(req.query);
  if (!kv.ok()) return kv.status();
  Query q;
  for (auto& [k, v] : *kv) q.first.emplace(k, v);
  return q;
}

void Redirect(const std::string& to, HttpResponse* res) {
  res->status = 301;
  res->SetHeader("Location", to);
  res->SetContent(absl::StrCat("<a href=\"", to, "\">Moved Permanently</a>.\n"),
                  "text/html; charset=utf-8");
}

}  // namespace

PprofServer::PprofServer(CpuProfiler* cpu, ProcessSymbolizer* symbolizer, TargetView target,
                         ServerOptions opts)
    : cpu_(cpu),
      symbolizer_(symbolizer),
      target_(std::move(target)),
      opts_(opts),
      server_(std::make_unique<HttpServer>(opts.http)) {
  Register();
}

PprofServer::~PprofServer() { Stop(); }

void PprofServer::CountRequest(int status) {
  std::lock_guard<std::mutex> l(mu_);
  ++requests_by_code_[status];
}

void PprofServer::Register() {
  HttpServer& s = *server_;
  // Lane ids must match enum Lane.
  s.AddLane("control", 4, 256);
  s.AddLane("lookup", 4, 64);
  s.AddLane("profile window", opts_.max_concurrent_windows, 0);
  // Counted before the response is written, so a client reading /metrics after its response
  // always sees its own request.
  s.SetObserver([this](const HttpRequest*, const HttpResponse& res) { CountRequest(res.status); });
  const std::vector<std::string> kGet = {"GET"};

  auto redirect = [](const HttpRequest&, const RequestContext&, HttpResponse* res) {
    Redirect("/debug/pprof/", res);
  };
  s.Handle(kGet, "/", kControlLane, redirect);
  s.Handle(kGet, "/debug/pprof", kControlLane, redirect);
  s.Handle(kGet, "/debug/pprof/", kControlLane,
           [this](const HttpRequest& req, const RequestContext&, HttpResponse* res) {
             ServeIndex(req, res);
           });
  // A HEAD costs no window: it only checks the request.
  auto window_unless_head = [](const HttpRequest& req) {
    return req.method == "HEAD" ? kControlLane : kWindowLane;
  };
  s.Handle(kGet, "/debug/pprof/profile", window_unless_head,
           [this](const HttpRequest& req, const RequestContext& ctx, HttpResponse* res) {
             ServeProfile(req, ctx, res);
           });
  s.Handle(kGet, "/debug/pprof/cmdline", kControlLane,
           [this](const HttpRequest& req, const RequestContext&, HttpResponse* res) {
             ServeCmdline(req, res);
           });
  s.Handle({"GET", "POST"}, "/debug/pprof/symbol", kQueryLane,
           [this](const HttpRequest& req, const RequestContext&, HttpResponse* res) {
             ServeSymbol(req, res);
           });
  // heap and allocs: a snapshot is a lookup; ?seconds=N holds a window.
  auto heap_lane = [](const HttpRequest& req) {
    if (req.method == "HEAD") return kControlLane;
    auto q = ParseRequestQuery(req);
    return q.ok() && q->Get("seconds") ? kWindowLane : kQueryLane;
  };
  for (const char* path : {"/debug/pprof/heap", "/debug/pprof/allocs"}) {
    s.Handle(kGet, path, heap_lane,
             [this](const HttpRequest& req, const RequestContext& ctx, HttpResponse* res) {
               ServeHeap(req, ctx, res);
             });
  }
  s.HandlePrefix(kGet, "/debug/pprof/", kControlLane,
                 [this](const HttpRequest& req, const RequestContext&, HttpResponse* res) {
                   ServeOtherProfile(req, res);
                 });
  s.Handle(
      kGet, "/healthz", kControlLane,
      [this](const HttpRequest&, const RequestContext&, HttpResponse* res) { ServeHealthz(res); });
  // Liveness: the server answers (readiness is /healthz).
  s.Handle(kGet, "/livez", kControlLane,
           [](const HttpRequest&, const RequestContext&, HttpResponse* res) {
             res->SetContent("ok\n", "text/plain; charset=utf-8");
           });
  s.Handle(kGet, "/metrics", kControlLane,
           [this](const HttpRequest&, const RequestContext&, HttpResponse* res) {
             res->SetContent(MetricsText(), "text/plain; version=0.0.4; charset=utf-8");
           });
}

void PprofServer::ServeIndex(const HttpRequest&, HttpResponse* res) {
  auto t = target_.current();
  std::string target_line =
      t ? absl::StrCat("pid ", t->pid, " (", HtmlEscape(t->comm), ", ", HtmlEscape(t->exe), ")")
        : absl::StrCat("none: ", HtmlEscape(target_.status()));
  std::string html = absl::StrCat(
      "<html>\n<head>\n<title>/debug/pprof/</title>\n</head>\n<body>\n/debug/pprof/\n",
      "<p>Served by pprof-sidecar for target: ", target_line, "</p>\n",
      "<p>Types of profiles available:</p>\n<table>\n<thead><td>Count</td><td>Profile</td>"
      "</thead>\n",
      "<tr><td></td><td><a href='cmdline?debug=1'>cmdline</a></td></tr>\n",
      "<tr><td></td><td><a href='allocs'>allocs</a></td></tr>\n",
      "<tr><td></td><td><a href='heap'>heap</a></td></tr>\n",
      "<tr><td></td><td><a href='profile'>profile</a></td></tr>\n",
      "<tr><td></td><td><a href='symbol'>symbol</a></td></tr>\n", "</table>\n",
      "<p>Not served yet by pprof-sidecar: goroutine, threadcreate, block, mutex, "
      "trace.</p>\n<br>\n<p>\nProfile Descriptions:\n<ul>\n",
      "<li><div class=profile-name>allocs: </div> A sampling of all past memory allocations "
      "of a Go target, read from its runtime; of other targets, sampled by malloc uprobes since "
      "they were attached (seconds=N: delta).</li>\n",
      "<li><div class=profile-name>cmdline: </div> The command line invocation of the target "
      "program</li>\n",
      "<li><div class=profile-name>heap: </div> A sampling of memory allocations of live "
      "objects of a Go target as of its last GC (gc=1 cannot force a GC from outside), or of "
      "another target from malloc uprobes (seconds=N: delta).</li>\n",
      "<li><div class=profile-name>profile: </div> CPU profile of the target, sampled with "
      "eBPF. You can specify the duration in the seconds GET parameter. After you get the "
      "profile file, use the go tool pprof command to investigate the profile.</li>\n",
      "<li><div class=profile-name>symbol: </div> Looks up the target's program counters "
      "listed in the request, responding with a table mapping program counters to function "
      "names.</li>\n",
      "</ul>\n</p>\n<p>Agent: <a href='/healthz'>/healthz</a> <a href='/metrics'>/metrics</a>"
      "</p>\n</body>\n</html>\n");
  res->SetHeader("X-Content-Type-Options", "nosniff");
  res->SetContent(html, "text/html; charset=utf-8");
}

void PprofServer::ServeProfile(const HttpRequest& req, const RequestContext& ctx,
                               HttpResponse* res) {
  res->SetHeader("X-Content-Type-Options", "nosniff");
  auto q = ParseRequestQuery(req);
  if (!q.ok()) return ServeError(res, 400, std::string(q.status().message()));
  auto secs = ParseSecondsParam(q->Get("seconds"), opts_.default_profile_seconds,
                                opts_.max_profile_seconds);
  if (!secs.ok()) return ServeError(res, 400, std::string(secs.status().message()));
  auto t = target_.current();
  if (!t) return ServeError(res, 503, absl::StrCat("no target process: ", target_.status()));
  res->SetHeader("Content-Type", "application/octet-stream");
  res->SetHeader("Content-Disposition", "attachment; filename=\"profile\"");
  if (req.method == "HEAD") return;  // the headers a GET would start with, without its window
  CpuProfiler::WindowEnd end;
  end.cancelled = [&ctx] { return ctx.client_gone(); };
  end.cut_short = [&ctx] { return ctx.shutting_down(); };
  end.cut_short_reason = "the agent is shutting down (SIGTERM)";
  auto prof = cpu_->Collect(
      absl::Seconds(*secs), end,
      {absl::StrCat("pprof-sidecar: target pid ", t->pid, " (", t->comm, ") ", t->exe)});
  if (!prof.ok()) {
    int code = absl::IsUnavailable(prof.status()) ? 503 : 500;
    return ServeError(res, code,
                      absl::StrCat("Could not enable CPU profiling: ", prof.status().message()));
  }
  profiles_served_.fetch_add(1);
  res->SetContent(*std::move(prof), "application/octet-stream");
}

void PprofServer::ServeCmdline(const HttpRequest&, HttpResponse* res) {
  res->SetHeader("X-Content-Type-Options", "nosniff");
  auto t = target_.current();
  if (!t) return ServeError(res, 503, absl::StrCat("no target process: ", target_.status()));
  std::string cmdline;
  if (!ReadWholeFile(absl::StrCat("/proc/", t->pid, "/cmdline"), &cmdline)) {
    return ServeError(res, 503, absl::StrCat("target pid ", t->pid, " exited"));
  }
  // Go writes os.Args joined by NUL, without a trailing NUL.
  if (!cmdline.empty() && cmdline.back() == '\0') cmdline.pop_back();
  res->SetContent(cmdline, "text/plain; charset=utf-8");
}

void PprofServer::ServeSymbol(const HttpRequest& req, HttpResponse* res) {
  res->SetHeader("X-Content-Type-Options", "nosniff");
  // Go: the program counters come from the POST body, or else from the raw query string.
  std::string input = req.method == "POST" ? req.body : "";
  if (input.empty()) input = req.query;
  std::string out = "num_symbols: 1\n";
  auto t = target_.current();
  std::vector<uint64_t> pcs =
      req.method == "HEAD" ? std::vector<uint64_t>() : ParseSymbolRequest(input);
  if (!pcs.empty() && t) {
    auto session = symbolizer_->NewSession(t->pid);
    for (uint64_t pc : pcs) {
      ResolvedFrame f = session->ResolveUser(pc, false);
      if (!f.lines.empty()) {
        absl::StrAppend(&out, "0x", absl::Hex(pc), " ", f.lines.back().function, "\n");
      }
    }
  }
  res->SetContent(out, "text/plain; charset=utf-8");
}

// heap and allocs (agent/heap): Go targets' own sampled heap profile, malloc uprobes for others;
// ?seconds=N for a delta.
void PprofServer::ServeHeap(const HttpRequest& req, const RequestContext& ctx, HttpResponse* res) {
  const bool allocs = req.path == "/debug/pprof/allocs";
  const std::string name = allocs ? "allocs" : "heap";
  res->SetHeader("X-Content-Type-Options", "nosniff");
  if (!heap_) {
    return ServeError(res, 501,
                      absl::StrCat("profile \"", name, "\" is not served by this pprof-sidecar"));
  }
  auto q = ParseRequestQuery(req);
  if (!q.ok()) return ServeError(res, 400, std::string(q.status().message()));
  int debug = 0;
  if (auto d = q->Get("debug"); d && (!absl::SimpleAtoi(*d, &debug) || debug != 0)) {
    return ServeError(res, 400,
                      "debug=N (legacy text format) is not served by pprof-sidecar; omit debug "
                      "for the protobuf profile");
  }
  auto secs = ParseSecondsParam(q->Get("seconds"), 0, opts_.max_profile_seconds);
  if (!secs.ok()) return ServeError(res, 400, std::string(secs.status().message()));
  auto t = target_.current();
  if (!t) return ServeError(res, 503, absl::StrCat("no target process: ", target_.status()));
  res->SetHeader("Content-Type", "application/octet-stream");
  res->SetHeader("Content-Disposition",
                 absl::StrCat("attachment; filename=\"", name, *secs > 0 ? "-delta" : "", "\""));
  if (req.method == "HEAD") return;
  HeapRequest hr;
  hr.kind = allocs ? HeapProfileKind::kAllocs : HeapProfileKind::kHeap;
  hr.delta = absl::Seconds(*secs);
  int gc = 0;
  auto gcv = q->Get("gc");
  hr.gc = gcv && absl::SimpleAtoi(*gcv, &gc) && gc > 0;
  hr.comments.push_back(
      absl::StrCat("pprof-sidecar: target pid ", t->pid, " (", t->comm, ") ", t->exe));
  hr.cancelled = [&ctx] { return ctx.client_gone(); };
  hr.cut_short = [&ctx] { return ctx.shutting_down(); };
  hr.cut_short_reason = "the agent is shutting down (SIGTERM)";
  auto prof = heap_->Collect(static_cast<pid_t>(t->pid), hr);
  if (!prof.ok()) {
    const absl::Status& st = prof.status();
    // The target's state (gone, exec'd, memory profiling turned off in the target): 503 with
    // the reason; what the agent cannot do: 501/403.
    int code = absl::IsUnimplemented(st)                                                       ? 501
               : absl::IsNotFound(st) || absl::IsAborted(st) || absl::IsFailedPrecondition(st) ? 503
               : absl::IsPermissionDenied(st)                                                  ? 403
                                              : 500;
    return ServeError(res, code, absl::StrCat("Could not get ", name, " profile: ", st.message()));
  }
  profiles_served_.fetch_add(1);
  res->SetContent(*std::move(prof), "application/octet-stream");
}

void PprofServer::ServeOtherProfile(const HttpRequest& req, HttpResponse* res) {
  const std::string name = req.path.substr(std::string("/debug/pprof/").size());
  for (const char* p : kNotYetProfiles) {
    if (name == p) {
      return ServeError(res, 501,
                        absl::StrCat("profile \"", name,
                                     "\" is not served by pprof-sidecar yet; available: "
                                     "profile (CPU), heap, allocs, cmdline, symbol"));
    }
  }
  ServeError(res, 404, "Unknown profile");
}

void PprofServer::ServeHealthz(HttpResponse* res) {
  const CpuReadiness cpu = cpu_->readiness();
  if (!cpu.ready) res->status = 503;
  res->SetContent(HealthText(cpu), "text/plain; charset=utf-8");
}

std::string PprofServer::TargetProfiles(pid_t pid) const {
  if (heap_ == nullptr) return "";
  absl::StatusOr<GoTargetInfo> info = heap_->TargetInfo(pid);
  if (!info.ok() || !info->is_go) return "";
  std::string o = absl::StrCat(
      "go: ", info->go_version.empty() ? "unknown release" : info->go_version, "\n");
  if (!info->symbols.ok()) {
    absl::StrAppend(&o, "unavailable: Go symbols in profiles (CPU): ", info->symbols.message(),
                    "\n");
  }
  if (!info->heap.ok()) {
    absl::StrAppend(&o, "unavailable: heap, allocs: ", info->heap.message(), "\n");
  }
  return o;
}

std::string PprofServer::HealthText(const CpuReadiness& cpu) const {
  std::string o = cpu.ready ? "ok\n" : "not ready: CPU profiles cannot be taken\n";
  if (cpu.ready) {
    const SamplerInfo& i = cpu.sampler;
    absl::StrAppend(&o, "cpu: ", i.clock, " clock", i.tick_attach.empty() ? "" : " at ",
                    i.tick_attach, ", ", i.program_variant, " BPF program\n");
    if (!i.tick_unavailable.empty()) absl::StrAppend(&o, "tick clock unavailable: ",
                                                     i.tick_unavailable, "\n");
    for (const std::string& f : i.reduced) absl::StrAppend(&o, "reduced: kernel lacks ", f, "\n");
  } else {
    absl::StrAppend(&o, "cpu: unavailable: ", cpu.reason, "\n",
                    "heap: Go targets' heap and allocs profiles (read from the target's memory) "
                    "still work; native malloc profiling needs the same BPF privileges\n");
  }
  auto t = target_.current();
  if (t) {
    absl::StrAppend(&o, "target: pid ", t->pid, " (", t->comm, ") ", t->exe, "\n",
                    target_.status(), "\n", TargetProfiles(t->pid));
  } else {
    absl::StrAppend(&o, "target: none: ", target_.status(),
                    "\nprofile endpoints answer 503 until a target appears\n");
  }
  for (ProfileSource* s : sources_) absl::StrAppend(&o, s->HealthLines(t));
  return o;
}

std::string PprofServer::MetricsText() const {
  CpuProfilerStats c = cpu_->stats();
  SymbolizerStats y = symbolizer_->stats();
  auto t = target_.current();
  std::string o;
  auto counter = [&o](const char* name, const char* help, uint64_t v,
                      const std::string& labels = "") {
    absl::StrAppend(&o, "# HELP ", name, " ", help, "\n# TYPE ", name, " counter\n", name,
                    labels.empty() ? "" : "{" + labels + "}", " ", v, "\n");
  };
  auto gauge = [&o](const char* name, const char* help, double v) {
    absl::StrAppend(&o, "# HELP ", name, " ", help, "\n# TYPE ", name, " gauge\n", name, " ", v,
                    "\n");
  };
  counter("pprof_sidecar_samples_total", "CPU samples of target threads seen by the BPF program.",
          c.sampler.samples_seen);
  counter("pprof_sidecar_samples_delivered_total", "CPU samples delivered to user space.",
          c.sampler.samples_delivered);
  absl::StrAppend(&o,
                  "# HELP pprof_sidecar_samples_dropped_total CPU samples lost, by reason.\n"
                  "# TYPE pprof_sidecar_samples_dropped_total counter\n",
                  "pprof_sidecar_samples_dropped_total{reason=\"ringbuf_full\"} ",
                  c.sampler.dropped_ringbuf_full, "\n",
                  "pprof_sidecar_samples_dropped_total{reason=\"window_full\"} ",
                  c.samples_dropped_window_full, "\n");
  absl::StrAppend(&o,
                  "# HELP pprof_sidecar_stack_errors_total Stack captures that failed in BPF.\n"
                  "# TYPE pprof_sidecar_stack_errors_total counter\n",
                  "pprof_sidecar_stack_errors_total{stack=\"user\"} ", c.sampler.user_stack_errors,
                  "\n", "pprof_sidecar_stack_errors_total{stack=\"kernel\"} ",
                  c.sampler.kernel_stack_errors, "\n");
  const CpuReadiness ready = cpu_->readiness();
  gauge("pprof_sidecar_cpu_profiling_ready",
        "1 when CPU profiles can be taken (the sampler is loaded and attached), else 0.",
        ready.ready ? 1 : 0);
  absl::StrAppend(&o,
                  "# HELP pprof_sidecar_cpu_sampling_clock What takes CPU samples (1: this one): "
                  "the scheduler tick or cpu-clock perf events.\n"
                  "# TYPE pprof_sidecar_cpu_sampling_clock gauge\n",
                  "pprof_sidecar_cpu_sampling_clock{clock=\"tick\"} ",
                  ready.sampler.clock == "tick" ? 1 : 0, "\n",
                  "pprof_sidecar_cpu_sampling_clock{clock=\"perf\"} ",
                  ready.sampler.clock == "perf" ? 1 : 0, "\n");
  absl::StrAppend(&o,
                  "# HELP pprof_sidecar_bpf_program_info The CPU sampling program: its build "
                  "(default, or compat for kernels without newer BPF features) and the tick's "
                  "attach point.\n# TYPE pprof_sidecar_bpf_program_info gauge\n",
                  "pprof_sidecar_bpf_program_info{variant=\"", ready.sampler.program_variant,
                  "\",tick_attach=\"", ready.sampler.tick_attach, "\",reduced_features=\"",
                  ready.sampler.reduced.size(), "\"} ", ready.ready ? 1 : 0, "\n");
  counter("pprof_sidecar_tick_state_errors_total",
          "Tick clock: samples skipped because the thread's sampling state could not be created.",
          c.sampler.tick_state_errors);
  counter("pprof_sidecar_stack_copy_errors_total",
          "Samples whose user stack could not be copied at all (unwound from frame pointers).",
          c.sampler.user_stack_copy_errors);
  absl::StrAppend(&o,
                  "# HELP pprof_sidecar_stack_copies_bounded_total User stack copies that stopped "
                  "at the stack's end, by how the end was found.\n"
                  "# TYPE pprof_sidecar_stack_copies_bounded_total counter\n",
                  "pprof_sidecar_stack_copies_bounded_total{by=\"go_stack_hi\"} ",
                  c.sampler.copy_bounded_go, "\n",
                  "pprof_sidecar_stack_copies_bounded_total{by=\"vma_end\"} ",
                  c.sampler.copy_bounded_vma, "\n");
  counter("pprof_sidecar_stack_vma_lookups_total",
          "Stack mappings looked up by the BPF program (once per thread and stack; remembered).",
          c.sampler.stack_vma_lookups);
  counter("pprof_sidecar_stack_copy_bytes_total", "User stack bytes copied by the BPF program.",
          c.sampler.bytes_copied);
  counter("pprof_sidecar_bpf_run_time_ns_total",
          "Time spent in the CPU sampling BPF program, all invocations (0 unless the kernel's BPF "
          "statistics are enabled: sysctl kernel.bpf_stats_enabled=1).",
          c.sampler.bpf_run_time_ns);
  counter("pprof_sidecar_bpf_runs_total",
          "Invocations of the CPU sampling BPF program, including those filtered out (0 unless "
          "kernel.bpf_stats_enabled=1).",
          c.sampler.bpf_run_count);
  counter("pprof_sidecar_profile_samples_total", "Samples written into served CPU profiles.",
          c.samples_in_profiles);
  counter("pprof_sidecar_profile_samples_truncated_total",
          "Samples in served profiles whose stack does not reach a thread root frame.",
          c.samples_in_profiles - std::min(c.samples_in_profiles, c.samples_reaching_root));
  absl::StrAppend(&o,
                  "# HELP pprof_sidecar_unsymbolized_frames_total Frames left without a symbol.\n"
                  "# TYPE pprof_sidecar_unsymbolized_frames_total counter\n",
                  "pprof_sidecar_unsymbolized_frames_total{space=\"user\"} ",
                  c.user_frames_unsymbolized, "\n",
                  "pprof_sidecar_unsymbolized_frames_total{space=\"kernel\"} ",
                  c.kernel_frames_unsymbolized, "\n");
  counter("pprof_sidecar_unwound_samples_total",
          "Samples whose user stack was unwound from the copied stack (CFI/pclntab).",
          c.samples_unwound);
  counter("pprof_sidecar_unwind_stitched_samples_total",
          "Unwound samples completed from the frame-pointer walk.", c.samples_stitched);
  absl::StrAppend(&o,
                  "# HELP pprof_sidecar_unwind_truncated_total Samples in served profiles not "
                  "reaching a thread root, by why unwinding stopped.\n"
                  "# TYPE pprof_sidecar_unwind_truncated_total counter\n");
  for (const auto& [reason, v] : std::vector<std::pair<const char*, uint64_t>>{
           {"no_cfi", c.unwind_no_cfi},
           {"read_outside_stack", c.unwind_read_outside_stack},
           {"depth_limit", c.unwind_depth_limit},
           {"bad_address", c.unwind_bad_address},
           {"stack_switch", c.unwind_stack_switch},
           {"frame_pointers_only", c.not_root_frame_pointers}}) {
    absl::StrAppend(&o, "pprof_sidecar_unwind_truncated_total{reason=\"", reason, "\"} ", v, "\n");
  }
  gauge("pprof_sidecar_symbol_cache_binaries", "Binaries held in the symbol cache.",
        y.binaries_cached);
  counter("pprof_sidecar_binary_open_errors_total", "Target binaries that could not be read.",
          y.binary_open_errors);
  gauge("pprof_sidecar_cpu_profiles_active", "CPU profile windows currently open.",
        c.windows_active);
  counter("pprof_sidecar_cpu_profiles_total", "CPU profile windows opened.", c.windows_started);
  gauge("pprof_sidecar_target_pid", "Pid of the current target (0: none).", t ? t->pid : 0);
  if (t && heap_) {
    absl::StatusOr<GoTargetInfo> info = heap_->TargetInfo(t->pid);
    if (info.ok()) {
      absl::StrAppend(&o,
                      "# HELP pprof_sidecar_target_info The current target; go_version is the Go "
                      "release its executable was built with (empty: not Go).\n"
                      "# TYPE pprof_sidecar_target_info gauge\n",
                      "pprof_sidecar_target_info{pid=\"", t->pid, "\",go_version=\"",
                      info->go_version, "\"} 1\n",
                      "# HELP pprof_sidecar_target_heap_available The target's heap and allocs "
                      "profiles can be read (Go: its runtime's records are located and valid).\n"
                      "# TYPE pprof_sidecar_target_heap_available gauge\n",
                      "pprof_sidecar_target_heap_available ", info->heap.ok() ? 1 : 0, "\n");
    }
  }
  if (heap_) {
    HeapProfilerStats h = heap_->stats();
    counter("pprof_sidecar_heap_profiles_total", "Heap/allocs profiles built.", h.profiles);
    counter("pprof_sidecar_heap_profile_errors_total", "Heap/allocs requests that failed.",
            h.errors);
    gauge("pprof_sidecar_heap_buckets", "Go heap profile buckets in the last read.",
          h.last_buckets);
    gauge("pprof_sidecar_heap_read_seconds", "Duration of the last Go heap bucket read.",
          h.last_read_micros / 1e6);
    // Malloc sampler (non-Go targets), current attachment.
    const MallocSamplerStats& m = h.native;
    gauge("pprof_sidecar_malloc_sampler_attached", "A malloc sampler is attached to the target.",
          h.native_attached ? 1 : 0);
    counter("pprof_sidecar_malloc_attach_errors_total", "Malloc sampler attach failures.",
            h.native_attach_errors);
    gauge("pprof_sidecar_malloc_probes", "Allocator uprobes and uretprobes attached now.",
          m.probes);
    counter("pprof_sidecar_malloc_late_probed_functions_total",
            "Allocator functions probed after the attach (libraries mapped later).",
            h.native_late_probes);
    counter("pprof_sidecar_malloc_calls_total", "Allocation calls seen by the probes.", m.calls);
    counter("pprof_sidecar_malloc_sampled_total", "Allocations sampled.", m.recorded);
    gauge("pprof_sidecar_malloc_live_tracked", "Sampled allocations tracked as live.", m.live);
    gauge("pprof_sidecar_malloc_buckets", "Malloc profile (stack, size) buckets.", m.buckets);
    absl::StrAppend(&o,
                    "# HELP pprof_sidecar_malloc_lost_total Malloc sampler events lost or "
                    "degraded, by reason.\n# TYPE pprof_sidecar_malloc_lost_total counter\n");
    for (const auto& [reason, v] :
         std::vector<std::pair<const char*, uint64_t>>{{"live_map_full", m.live_full},
                                                       {"ringbuf_full_alloc", m.ringbuf_drops},
                                                       {"ringbuf_full_free", m.free_drops},
                                                       {"stack_error", m.stack_errors},
                                                       {"pending_full", m.pending_full},
                                                       {"unmatched_return", m.pending_mismatch},
                                                       {"bucket_limit", m.bucket_overflow}}) {
      absl::StrAppend(&o, "pprof_sidecar_malloc_lost_total{reason=\"", reason, "\"} ", v, "\n");
    }
  }
  const HttpServer::Stats hs = server_->stats();
  gauge("pprof_sidecar_http_connections", "HTTP connections open.", hs.connections_open);
  counter("pprof_sidecar_http_connections_total", "HTTP connections accepted.",
          hs.connections_total);
  counter("pprof_sidecar_http_connections_evicted_total",
          "Idle or stalled HTTP connections closed to make room for new ones.",
          hs.connections_evicted);
  counter("pprof_sidecar_http_timeouts_total",
          "HTTP requests not received, or responses not taken, in time.", hs.timeouts);
  absl::StrAppend(&o,
                  "# HELP pprof_sidecar_http_rejected_total HTTP requests refused, by reason.\n"
                  "# TYPE pprof_sidecar_http_rejected_total counter\n",
                  "pprof_sidecar_http_rejected_total{reason=\"busy\"} ", hs.rejected_busy, "\n",
                  "pprof_sidecar_http_rejected_total{reason=\"too_large\"} ", hs.rejected_limits,
                  "\n");
  absl::StrAppend(&o,
                  "# HELP pprof_sidecar_http_requests_running HTTP requests being handled, by "
                  "kind.\n# TYPE pprof_sidecar_http_requests_running gauge\n");
  for (const auto& [lane, n] : hs.lane_running) {
    absl::StrAppend(&o, "pprof_sidecar_http_requests_running{kind=\"", lane, "\"} ", n, "\n");
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    absl::StrAppend(&o,
                    "# HELP pprof_sidecar_http_requests_total HTTP requests by status code.\n"
                    "# TYPE pprof_sidecar_http_requests_total counter\n");
    for (const auto& [code, n] : requests_by_code_) {
      absl::StrAppend(&o, "pprof_sidecar_http_requests_total{code=\"", code, "\"} ", n, "\n");
    }
  }
  MetricsWriter w;
  for (ProfileSource* s : sources_) s->WriteMetrics(t, &w);
  absl::StrAppend(&o, w.text());
  return o;
}

absl::Status PprofServer::Bind(const std::string& host, int port) {
  return server_->Bind(host, port);
}

absl::Status PprofServer::Serve() { return server_->Serve(); }

void PprofServer::Stop() {
  if (server_) server_->Shutdown();
}

}  // namespace pprof_sidecar
