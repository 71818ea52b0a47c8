// HTTPS server of the pprof-sidecar mutating admission webhook.
//
// POST /mutate: AdmissionReview v1 in, AdmissionReview out (see injector.h); a body that is not an
// AdmissionReview v1 request gets HTTP 400 with a one-line reason, and the server keeps serving.
// GET /healthz: "ok". TLS only; the certificate and key are PEM files, re-read when they change
// on disk (cert-manager and Secret volume updates rotate them in place).
#ifndef PPROF_SIDECAR_AGENT_WEBHOOK_WEBHOOK_SERVER_H_
#define PPROF_SIDECAR_AGENT_WEBHOOK_WEBHOOK_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agent/webhook/injector.h"

namespace httplib {
class SSLServer;
}

namespace pprof_sidecar {

class WebhookServer {
 public:
  // Loads the certificate and key once to fail early on bad files.
  static absl::StatusOr<std::unique_ptr<WebhookServer>> Create(const std::string& cert_file,
                                                               const std::string& key_file,
                                                               const InjectorConfig& config);
  ~WebhookServer();
  WebhookServer(const WebhookServer&) = delete;
  WebhookServer& operator=(const WebhookServer&) = delete;

  // Binds host:port (port 0: any free port, see port()).
  absl::Status Bind(const std::string& host, int port);
  int port() const { return port_; }
  // Serves until Stop(). Thread-safe Stop.
  absl::Status Serve();
  void Stop();
  // True once Serve() accepts connections.
  bool is_running() const;

  struct CertState;

 private:
  WebhookServer() = default;
  InjectorConfig config_;
  std::unique_ptr<CertState> certs_;
  std::unique_ptr<httplib::SSLServer> server_;
  int port_ = 0;
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_WEBHOOK_WEBHOOK_SERVER_H_
