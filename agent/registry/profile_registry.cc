#include "agent/registry/profile_registry.h"

#include <cmath>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace pprof_sidecar {
namespace {

// Integral values exactly (counters), others as %g.
std::string FormatValue(double v) {
  if (std::floor(v) == v && std::fabs(v) < 9e15) return absl::StrCat(static_cast<int64_t>(v));
  return absl::StrFormat("%g", v);
}

}  // namespace

absl::Status ProfileRegistry::Add(std::unique_ptr<ProfileSource> source) {
  absl::Status st = AddUnowned(source.get());
  if (st.ok()) owned_.push_back(std::move(source));
  return st;
}

absl::Status ProfileRegistry::AddUnowned(ProfileSource* source) {
  const std::string& name = source->info().name;
  if (name.empty() || name.find('/') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("bad profile name \"", name, "\""));
  }
  if (by_name_.count(name) || not_served_.count(name)) {
    return absl::AlreadyExistsError(absl::StrCat("profile \"", name, "\" registered twice"));
  }
  by_name_[name] = source;
  return absl::OkStatus();
}

void ProfileRegistry::NotServed(const std::string& name, const std::string& why) {
  if (!by_name_.count(name)) not_served_[name] = why;
}

ProfileSource* ProfileRegistry::Lookup(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

const std::string* ProfileRegistry::NotServedReason(const std::string& name) const {
  auto it = not_served_.find(name);
  return it == not_served_.end() ? nullptr : &it->second;
}

std::vector<ProfileSource*> ProfileRegistry::Sources() const {
  std::vector<ProfileSource*> v;
  for (const auto& [name, s] : by_name_) v.push_back(s);
  return v;
}

void MetricsWriter::Family(const std::string& name, const std::string& help, const char* type,
                           const std::string& label,
                           const std::vector<std::pair<std::string, double>>& values) {
  absl::StrAppend(&out_, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
  for (const auto& [key, v] : values) {
    if (label.empty()) {
      absl::StrAppend(&out_, name, " ", FormatValue(v), "\n");
    } else {
      absl::StrAppend(&out_, name, "{", label, "=\"", key, "\"} ", FormatValue(v), "\n");
    }
  }
}

void MetricsWriter::Counter(const std::string& name, const std::string& help, double v) {
  Family(name, help, "counter", "", {{"", v}});
}

void MetricsWriter::Gauge(const std::string& name, const std::string& help, double v) {
  Family(name, help, "gauge", "", {{"", v}});
}

void MetricsWriter::CounterFamily(const std::string& name, const std::string& help,
                                  const std::string& label,
                                  const std::vector<std::pair<std::string, double>>& values) {
  Family(name, help, "counter", label, values);
}

void MetricsWriter::GaugeFamily(const std::string& name, const std::string& help,
                                const std::string& label,
                                const std::vector<std::pair<std::string, double>>& values) {
  Family(name, help, "gauge", label, values);
}

void MetricsWriter::Info(const std::string& name, const std::string& help,
                         const std::vector<std::pair<std::string, std::string>>& labels, double v) {
  absl::StrAppend(&out_, "# HELP ", name, " ", help, "\n# TYPE ", name, " gauge\n", name, "{");
  for (size_t i = 0; i < labels.size(); ++i) {
    absl::StrAppend(&out_, i ? "," : "", labels[i].first, "=\"", labels[i].second, "\"");
  }
  absl::StrAppend(&out_, "} ", FormatValue(v), "\n");
}

}  // namespace pprof_sidecar
