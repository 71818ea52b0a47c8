// The agent's HTTP/1.1 server. Built for a small set of clients that may be slow, many or
// hostile, in front of handlers some of which run for minutes (a CPU profile window):
//
//   - One I/O thread reads and writes every connection (non-blocking, epoll). A connection
//     costs no thread while its request arrives or its response leaves, so slow clients (a
//     header byte per second) cannot starve anyone; each is bounded in time (header deadline,
//     body deadline, idle keep-alive, no-progress write timeout) and in memory (HttpLimits).
//     At most max_connections are open: a new one evicts the connection idle or stalled in a
//     request the longest.
//   - Complete requests run on worker threads grouped in lanes: each route chooses its lane per
//     request (e.g. profile windows apart from /healthz), each lane has its own number of
//     workers (started on demand) and a bounded queue; a request finding both full is answered
//     503 with the reason and Retry-After. So long requests can fill their lane, never the
//     others.
//   - Pipelined requests are answered in order; a client that half-closes after its request
//     still gets the response; HEAD runs the GET handler with method "HEAD" (handlers skip the
//     expensive work) and the body is not sent; a method the path does not support is a 405
//     with Allow; "Expect: 100-continue" is honoured.
//   - Shutdown() (async-signal-safe) stops accepting, tells running handlers to finish now
//     (RequestContext::shutting_down), answers queued requests 503, lets the responses in
//     flight be written for up to Options::drain_timeout, and makes Serve() return.
//   - The observer sees every response's status before its first byte is written (metrics).
#ifndef PPROF_SIDECAR_AGENT_SERVER_HTTP_SERVER_H_
#define PPROF_SIDECAR_AGENT_SERVER_HTTP_SERVER_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "agent/server/http_request.h"

namespace pprof_sidecar {

struct HttpResponse {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;  // in order, as set
  std::string body;

  // Replaces every header named `name` (case-insensitive) by one with `value`.
  void SetHeader(const std::string& name, const std::string& value);
  void RemoveHeader(const std::string& name);
  bool HasHeader(const std::string& name) const;
  std::string HeaderValue(const std::string& name) const;  // "" if absent
  void SetContent(std::string body, const std::string& content_type);
};

// What a handler may ask while it runs.
class RequestContext {
 public:
  RequestContext(std::shared_ptr<const std::atomic<bool>> gone,
                 const std::atomic<bool>* shutting_down)
      : gone_(std::move(gone)), shutting_down_(shutting_down) {}
  // The client's connection failed (reset or errored): nobody will read the response.
  bool client_gone() const { return gone_ && gone_->load(std::memory_order_relaxed); }
  // The server is stopping: finish now with what there is (e.g. a profile cut short).
  bool shutting_down() const {
    return shutting_down_ && shutting_down_->load(std::memory_order_relaxed);
  }

 private:
  std::shared_ptr<const std::atomic<bool>> gone_;
  const std::atomic<bool>* shutting_down_;
};

class HttpServer {
 public:
  struct Options {
    HttpLimits limits;
    size_t max_connections = 256;
    // From a request's first byte to the end of its header fields; then to the end of its body.
    absl::Duration header_timeout = absl::Seconds(10);
    absl::Duration body_timeout = absl::Seconds(30);
    absl::Duration idle_timeout = absl::Seconds(60);   // keep-alive with no request
    absl::Duration write_timeout = absl::Seconds(30);  // no byte of a response accepted
    // Request bodies buffered by all connections together (the rest get 503).
    size_t max_buffered_body_bytes = 16 << 20;
    // After Shutdown(): how long responses in flight may still be written.
    absl::Duration drain_timeout = absl::Seconds(3);
  };
  using Handler = std::function<void(const HttpRequest&, const RequestContext&, HttpResponse*)>;
  using LaneChooser = std::function<int(const HttpRequest&)>;
  // Sees each response (request is null for errors found before a request was complete).
  using Observer = std::function<void(const HttpRequest*, const HttpResponse&)>;

  explicit HttpServer(Options opts);
  ~HttpServer();  // stops (as Shutdown, without waiting for a drain) and joins every thread
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // A lane of `workers` threads (started on demand) and a queue of `queue` waiting requests.
  // `name` appears in 503 answers ("too many concurrent <name> requests"). Returns its id.
  int AddLane(const std::string& name, size_t workers, size_t queue);
  // Serves `path` (the percent-decoded path, exactly) for `methods` (GET implies HEAD) on the
  // lane `choose` picks for each request. Call before Serve().
  void Handle(const std::vector<std::string>& methods, const std::string& path, LaneChooser choose,
              Handler handler);
  void Handle(const std::vector<std::string>& methods, const std::string& path, int lane,
              Handler handler);
  // Serves paths starting with `prefix` that no exact route serves (the longest prefix wins).
  void HandlePrefix(const std::vector<std::string>& methods, const std::string& prefix,
                    LaneChooser choose, Handler handler);
  void HandlePrefix(const std::vector<std::string>& methods, const std::string& prefix, int lane,
                    Handler handler);
  // Answers paths no route serves (default: 404 "404 page not found").
  void SetNotFound(int lane, Handler handler);
  void SetObserver(Observer observer) { observer_ = std::move(observer); }

  absl::Status Bind(const std::string& host, int port);  // port 0: any free port
  int port() const { return port_; }
  // Runs the I/O loop until Shutdown() and the drain that follows.
  absl::Status Serve();
  // Async-signal-safe; idempotent.
  void Shutdown();

  struct Stats {
    uint64_t connections_open = 0;
    uint64_t connections_total = 0;
    uint64_t connections_evicted = 0;
    uint64_t timeouts = 0;                         // header, body, idle or write deadlines
    uint64_t rejected_busy = 0;                    // 503 for a full lane
    uint64_t rejected_limits = 0;                  // 413, 414, 431
    std::map<std::string, uint64_t> lane_running;  // by lane name
  };
  Stats stats() const;

 private:
  struct Conn;
  struct Route {
    std::vector<std::string> methods;
    LaneChooser choose;
    Handler handler;
  };
  struct Job {
    uint64_t conn_id = 0;
    HttpRequest request;
    const Handler* handler = nullptr;
    std::shared_ptr<std::atomic<bool>> gone;
  };
  struct Lane {
    std::string name;
    size_t max_workers = 1, max_queue = 0;
    size_t workers = 0, busy = 0;
    std::deque<Job> queue;
    std::vector<std::thread> threads;
  };
  struct Done {
    uint64_t conn_id = 0;
    HttpResponse response;
    bool head = false;
    bool keep_alive = true;
  };

  void Loop();
  void Accept();
  void OnReadable(Conn& c);
  void OnWritable(Conn& c);
  void ParseAndDispatch(Conn& c);
  void Dispatch(Conn& c, HttpRequest req);
  // Queues the request for a worker of lane `lane_id`, or answers 503 if the lane is full.
  void Enqueue(Conn& c, HttpRequest req, int lane_id, const Handler* handler);
  // Answers on the I/O thread, without a worker.
  void AnswerNow(Conn& c, HttpRequest req, HttpResponse r, bool keep_alive);
  void AnswerError(Conn& c, int status, const std::string& message, bool close);
  void StartResponse(Conn& c, HttpResponse resp, bool head, bool keep_alive);
  void FlushWrites(Conn& c);
  void ContinueReading(Conn& c);
  void Close(Conn& c);
  void CheckDeadlines(absl::Time now);
  void DrainDone();
  void BeginShutdown();
  bool EvictOne();
  void UpdateInterest(Conn& c);
  void WorkerLoop(Lane* lane);
  const Route* FindRoute(const std::string& path) const;
  void Observe(const HttpRequest* req, const HttpResponse& resp);

  const Options opts_;
  std::map<std::string, Route> exact_, prefix_;
  Route not_found_;
  int not_found_lane_ = 0;
  Observer observer_;

  int listen_fd_ = -1, epoll_fd_ = -1, wake_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> shutdown_requested_{false};
  std::atomic<bool> shutting_down_{false};  // seen by handlers
  absl::Time drain_deadline_ = absl::InfiniteFuture();

  // I/O thread only.
  std::map<uint64_t, std::unique_ptr<Conn>> conns_;
  uint64_t next_conn_id_ = 1;
  size_t buffered_body_bytes_ = 0;
  std::vector<uint64_t> to_parse_;  // connections ready for their next request

  mutable std::mutex mu_;  // guards lanes_ (queues, counts), done_, stop_workers_
  std::condition_variable work_cv_;
  std::vector<std::unique_ptr<Lane>> lanes_;
  std::vector<Done> done_;
  bool stop_workers_ = false;

  std::atomic<uint64_t> connections_total_{0}, evicted_{0}, timeouts_{0}, rejected_busy_{0},
      rejected_limits_{0}, connections_open_{0};
};

// The reason phrase of an HTTP status code ("Not Found"); "Unknown" if not known.
const char* HttpStatusText(int status);

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_SERVER_HTTP_SERVER_H_
