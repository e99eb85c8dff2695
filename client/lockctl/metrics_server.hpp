// lockctl: a minimal HTTP server for GET /metrics (Prometheus text format).
#pragma once

#include <functional>
#include <string>
#include <thread>

namespace lockctl {

// Serves body() at /metrics on one address until destroyed.
class MetricsServer {
  public:
    // Listen on "HOST:PORT" (IPv4 or a name; port 0 picks one, announced on
    // stderr). Throws a usage Failure for a malformed address and
    // unavailable (69) when it cannot bind.
    MetricsServer(const std::string &listen, std::function<std::string()> body);
    ~MetricsServer();
    MetricsServer(const MetricsServer &) = delete;
    MetricsServer &operator=(const MetricsServer &) = delete;

    // The port actually bound.
    int port() const {
        return port_;
    }

  private:
    // Accept and answer requests until stop_fd_ is signalled.
    void serve();
    // Read one request from `fd` and answer it.
    void answer(int fd);

    std::function<std::string()> body_;
    int listen_fd_ = -1;
    int stop_fd_ = -1;
    int port_ = 0;
    std::thread thread_;
};

}  // namespace lockctl
