// The profile kinds the agent serves, by name, as Go's pprof.Lookup: the HTTP layer routes
// /debug/pprof/<name> to the registered source, lists every kind on the index page, answers 501
// with the reason for names registered as not served (NotServed), and 404 for any other name.
// Registration happens before the server starts; lookups are then lock-free reads.
#ifndef PPROF_SIDECAR_AGENT_REGISTRY_PROFILE_REGISTRY_H_
#define PPROF_SIDECAR_AGENT_REGISTRY_PROFILE_REGISTRY_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "agent/registry/profile_source.h"

namespace pprof_sidecar {

class ProfileRegistry {
 public:
  // Takes ownership. AlreadyExists if the name is taken.
  absl::Status Add(std::unique_ptr<ProfileSource> source);
  // Does not take ownership: `source` outlives the registry.
  absl::Status AddUnowned(ProfileSource* source);
  // A Go profile name the agent knows but does not produce; requests get 501 with `why`.
  void NotServed(const std::string& name, const std::string& why);

  ProfileSource* Lookup(const std::string& name) const;  // null if none
  // Why `name` is not served, if it was registered with NotServed.
  const std::string* NotServedReason(const std::string& name) const;
  // Registered sources in name order (the index page's order, as Go's).
  std::vector<ProfileSource*> Sources() const;
  const std::map<std::string, std::string>& not_served() const { return not_served_; }

 private:
  std::map<std::string, ProfileSource*> by_name_;
  std::vector<std::unique_ptr<ProfileSource>> owned_;
  std::map<std::string, std::string> not_served_;
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_REGISTRY_PROFILE_REGISTRY_H_
