// Fuzzes the admission handler with arbitrary request bodies: it must never crash, and any
// response it produces must be a JSON AdmissionReview whose patch (if any) applies to the object.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "agent/webhook/injector.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view body(reinterpret_cast<const char*>(data), size);
  pprof_sidecar::InjectorConfig cfg;
  absl::StatusOr<std::string> out = pprof_sidecar::ReviewAdmission(body, cfg);
  if (!out.ok()) return 0;
  auto review = nlohmann::json::parse(*out, nullptr, false);
  if (review.is_discarded() || !review.contains("response")) abort();
  const auto& resp = review["response"];
  if (resp.contains("patch")) {
    std::string patch;
    if (!absl::Base64Unescape(resp["patch"].get<std::string>(), &patch)) abort();
    auto ops = nlohmann::json::parse(patch, nullptr, false);
    if (ops.is_discarded() || !ops.is_array()) abort();
  }
  return 0;
}
