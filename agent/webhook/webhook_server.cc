#include "agent/webhook/webhook_server.h"

#include <httplib.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/stat.h>

#include <cstdio>
#include <mutex>

#include "absl/strings/str_cat.h"

namespace pprof_sidecar {
namespace {

constexpr size_t kMaxBodyBytes = 8 << 20;  // Kubernetes objects are at most ~1.5 MB in etcd.

std::string OpensslError() {
  unsigned long e = ERR_get_error();
  if (e == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof(buf));
  ERR_clear_error();
  return buf;
}

struct BioCloser {
  void operator()(BIO* b) const { BIO_free(b); }
};
using BioPtr = std::unique_ptr<BIO, BioCloser>;

// mtime (ns) and size of a file, to notice replacement; {0,0} when it cannot be stat'ed.
std::pair<int64_t, int64_t> FileStamp(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return {0, 0};
  return {static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec,
          static_cast<int64_t>(st.st_size)};
}

}  // namespace

// The serving certificate chain and key, reloaded when either file changes.
struct WebhookServer::CertState {
  std::string cert_file, key_file;
  std::mutex mu;
  std::pair<int64_t, int64_t> cert_stamp{-1, -1}, key_stamp{-1, -1};
  X509* leaf = nullptr;
  STACK_OF(X509) * chain = nullptr;
  EVP_PKEY* key = nullptr;

  ~CertState() { Clear(); }
  void Clear() {
    X509_free(leaf);
    sk_X509_pop_free(chain, X509_free);
    EVP_PKEY_free(key);
    leaf = nullptr;
    chain = nullptr;
    key = nullptr;
  }

  // Loads both files when they changed since the last load. On failure keeps the old pair.
  absl::Status MaybeReload() {
    auto cs = FileStamp(cert_file), ks = FileStamp(key_file);
    if (cs == cert_stamp && ks == key_stamp && leaf != nullptr) return absl::OkStatus();
    BioPtr cb(BIO_new_file(cert_file.c_str(), "r"));
    if (!cb) return absl::NotFoundError(absl::StrCat("open TLS certificate ", cert_file));
    X509* new_leaf = PEM_read_bio_X509(cb.get(), nullptr, nullptr, nullptr);
    if (new_leaf == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("no PEM certificate in ", cert_file, ": ", OpensslError()));
    }
    STACK_OF(X509)* new_chain = sk_X509_new_null();
    while (X509* extra = PEM_read_bio_X509(cb.get(), nullptr, nullptr, nullptr)) {
      sk_X509_push(new_chain, extra);
    }
    ERR_clear_error();  // the loop ends on "no start line"
    BioPtr kb(BIO_new_file(key_file.c_str(), "r"));
    EVP_PKEY* new_key = kb ? PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr) : nullptr;
    if (new_key == nullptr || X509_check_private_key(new_leaf, new_key) != 1) {
      std::string why = kb ? OpensslError() : "cannot open";
      X509_free(new_leaf);
      sk_X509_pop_free(new_chain, X509_free);
      EVP_PKEY_free(new_key);
      return absl::InvalidArgumentError(absl::StrCat(
          "TLS key ", key_file, " is unreadable or does not match ", cert_file, ": ", why));
    }
    Clear();
    leaf = new_leaf;
    chain = new_chain;
    key = new_key;
    cert_stamp = cs;
    key_stamp = ks;
    return absl::OkStatus();
  }
};

WebhookServer::~WebhookServer() = default;

absl::StatusOr<std::unique_ptr<WebhookServer>> WebhookServer::Create(const std::string& cert_file,
                                                                     const std::string& key_file,
                                                                     const InjectorConfig& config) {
  std::unique_ptr<WebhookServer> s(new WebhookServer());
  s->config_ = config;
  s->certs_ = std::make_unique<CertState>();
  s->certs_->cert_file = cert_file;
  s->certs_->key_file = key_file;
  if (absl::Status st = s->certs_->MaybeReload(); !st.ok()) return st;

  CertState* certs = s->certs_.get();
  s->server_ = std::make_unique<httplib::SSLServer>([certs](SSL_CTX& ctx) {
    SSL_CTX_set_min_proto_version(&ctx, TLS1_2_VERSION);
    // Picks the current certificate for every handshake, reloading it if rotated on disk.
    SSL_CTX_set_cert_cb(
        &ctx,
        [](SSL* ssl, void* arg) -> int {
          auto* c = static_cast<CertState*>(arg);
          std::lock_guard<std::mutex> lock(c->mu);
          if (absl::Status st = c->MaybeReload(); !st.ok()) {
            fprintf(stderr, "pprof-sidecar-webhook: keeping the previous certificate: %s\n",
                    std::string(st.message()).c_str());
          }
          return SSL_use_cert_and_key(ssl, c->leaf, c->key, c->chain, 1) == 1 ? 1 : 0;
        },
        certs);
    return true;
  });
  if (!s->server_->is_valid()) {
    return absl::InternalError(absl::StrCat("cannot set up TLS: ", OpensslError()));
  }

  InjectorConfig* cfg = &s->config_;
  s->server_->set_payload_max_length(kMaxBodyBytes);
  s->server_->set_read_timeout(10, 0);
  s->server_->Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
  });
  s->server_->Post("/mutate", [cfg](const httplib::Request& req, httplib::Response& res) {
    absl::StatusOr<std::string> out = ReviewAdmission(req.body, *cfg);
    if (!out.ok()) {
      res.status = 400;
      res.set_content(
          absl::StrCat("pprof-sidecar-webhook: bad request: ", out.status().message(), "\n"),
          "text/plain");
      fprintf(stderr, "pprof-sidecar-webhook: 400 from %s: %s\n", req.remote_addr.c_str(),
              std::string(out.status().message()).c_str());
      return;
    }
    res.set_content(*out, "application/json");
  });
  return s;
}

absl::Status WebhookServer::Bind(const std::string& host, int port) {
  if (port == 0) {
    port_ = server_->bind_to_any_port(host);
    if (port_ < 0) return absl::UnavailableError(absl::StrCat("cannot bind ", host, ":0"));
  } else {
    if (!server_->bind_to_port(host, port)) {
      return absl::UnavailableError(absl::StrCat("cannot bind ", host, ":", port));
    }
    port_ = port;
  }
  return absl::OkStatus();
}

absl::Status WebhookServer::Serve() {
  if (!server_->listen_after_bind()) return absl::InternalError("HTTPS server loop failed");
  return absl::OkStatus();
}

void WebhookServer::Stop() { server_->stop(); }

bool WebhookServer::is_running() const { return server_->is_running(); }

}  // namespace pprof_sidecar
