// Prometheus metrics for lock operations, from a registry the application exposes.
//
//   std::string body = lockext::default_metrics().expose();  // serve at /metrics
//
// Labels are bounded: backend, lock class (never the raw lock name) and result.
#pragma once

#include <memory>
#include <string>
#include <string_view>

namespace lockext {

namespace detail {
class MetricsAccess;
}

class Metrics {
  public:
    Metrics();
    ~Metrics();
    Metrics(const Metrics &) = delete;
    Metrics &operator=(const Metrics &) = delete;

    // result: "acquired", "not_obtained" or "error".
    void count_acquire(std::string_view backend, std::string_view lock_class,
                       std::string_view result);
    // result: "ok", "lost" or "error".
    void count_renewal(std::string_view backend, std::string_view result);
    void count_lost(std::string_view backend, std::string_view lock_class);
    // result: "held" (the lease was still held), "not_held" (it had run out or
    // been taken) or "error" (the backend call failed).
    void count_release(std::string_view backend, std::string_view result);
    void observe_wait(std::string_view backend, std::string_view lock_class, double seconds);
    void observe_hold(std::string_view backend, std::string_view lock_class, double seconds);

    // Everything recorded so far, in the Prometheus text exposition format 0.0.4.
    std::string expose() const;

  private:
    friend class detail::MetricsAccess;  // the library's lookup-free hot path
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// The process-wide registry managers use unless given another.
Metrics &default_metrics();

}  // namespace lockext
