#include "agent/oom/snapshots_source.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"

namespace pprof_sidecar {
namespace {

constexpr char kPrefix[] = "/debug/pprof/snapshots/";

std::string HtmlEscape(absl::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string JsonString(absl::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      absl::StrAppendFormat(&out, "\\u%04x", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

std::string Time(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", t, absl::UTCTimeZone());
}

std::string Percent(const SnapshotMeta& m) {
  return m.limit ? absl::StrFormat("%.1f", 100.0 * m.usage / m.limit) : "";
}

}  // namespace

SnapshotsSource::SnapshotsSource(SnapshotStore* store, const FlightRecorder* recorder)
    : store_(store), recorder_(recorder) {
  info_.name = "snapshots";
  info_.description =
      "Heap (and goroutine) profiles of the target saved as its memory approached its limit and "
      "when the kernel OOM-killed it, kept across its restarts. Open the list; each entry is a "
      "pprof file.";
  info_.needs_target = false;
  info_.subpaths = true;
  info_.error_prefix = "Could not get snapshot";
}

absl::StatusOr<ProfileResponse> SnapshotsSource::Collect(const ProfileRequest& req) {
  absl::string_view name = absl::StripPrefix(req.subpath, "/");
  if (name.empty()) {
    auto f = req.params.find("format");
    const bool json = f != req.params.end() ? f->second == "json"
                                            : absl::StrContains(req.accept, "application/json");
    return json ? ListJson() : ListHtml();
  }
  absl::ConsumeSuffix(&name, ".pb.gz");
  absl::StatusOr<std::string> body = store_->Read(std::string(name));
  if (!body.ok()) return body.status();
  ProfileResponse r;
  r.body = *std::move(body);
  return r;
}

ProfileResponse SnapshotsSource::ListHtml() const {
  std::string h = absl::StrCat(
      "<html>\n<head>\n<title>", kPrefix, "</title>\n</head>\n<body>\n", kPrefix,
      "<br>\n<br>\nSnapshots of the target's profiles (oldest first; <a "
      "href=\"?format=json\">JSON</a>):\n<table>\n<thead><td>Time</td><td>Reason</td><td>"
      "Kind</td><td>Pid</td><td>Process</td><td>Usage</td><td>Limit</td><td>%</td><td>Bytes</td>"
      "<td>Profile</td></thead>\n");
  for (const SnapshotMeta& m : store_->List()) {
    absl::StrAppend(&h, "<tr><td>", Time(m.time), "</td><td>", HtmlEscape(m.reason), "</td><td>",
                    HtmlEscape(m.kind), "</td><td>", m.pid, "</td><td>", HtmlEscape(m.comm),
                    "</td><td>", m.usage, "</td><td>", m.limit, "</td><td>", Percent(m),
                    "</td><td>", m.bytes, "</td><td><a href=\"", HtmlEscape(m.name), "\">",
                    HtmlEscape(m.name), "</a></td></tr>\n");
  }
  absl::StrAppend(&h, "</table>\n");
  const absl::Status health = store_->health();
  if (!health.ok()) {
    absl::StrAppend(&h, "<p>The last snapshot could not be written: ", HtmlEscape(health.message()),
                    "</p>\n");
  }
  absl::StrAppend(&h, "<p>Download one: <code>go tool pprof http://HOST", kPrefix,
                  "NAME</code></p>\n</body>\n</html>\n");
  ProfileResponse r;
  r.body = std::move(h);
  r.content_type = "text/html; charset=utf-8";
  return r;
}

ProfileResponse SnapshotsSource::ListJson() const {
  std::string j = "{\"snapshots\":[";
  bool first = true;
  for (const SnapshotMeta& m : store_->List()) {
    absl::StrAppend(&j, first ? "" : ",", "\n{\"name\":", JsonString(m.name),
                    ",\"url\":", JsonString(absl::StrCat(kPrefix, m.name)),
                    ",\"kind\":", JsonString(m.kind), ",\"reason\":", JsonString(m.reason),
                    ",\"time\":", JsonString(Time(m.time)), ",\"pid\":", m.pid,
                    ",\"start_time_ticks\":", m.start_time, ",\"comm\":", JsonString(m.comm),
                    ",\"usage_bytes\":", m.usage, ",\"rss_bytes\":", m.rss,
                    ",\"limit_bytes\":", m.limit, ",\"bytes\":", m.bytes, "}");
    first = false;
  }
  const absl::Status health = store_->health();
  absl::StrAppend(&j, "],\n\"write_error\":", health.ok() ? "null" : JsonString(health.message()),
                  "}\n");
  ProfileResponse r;
  r.body = std::move(j);
  r.content_type = "application/json";
  return r;
}

std::string SnapshotsSource::HealthLines(const std::optional<ProcessInfo>&) const {
  if (recorder_ != nullptr) return recorder_->HealthLines();
  const absl::Status h = store_->health();
  return h.ok() ? "" : absl::StrCat("snapshots: cannot write: ", h.message(), "\n");
}

void SnapshotsSource::WriteMetrics(const std::optional<ProcessInfo>&, MetricsWriter* w) const {
  if (recorder_ != nullptr) recorder_->WriteMetrics(w);
}

}  // namespace pprof_sidecar
