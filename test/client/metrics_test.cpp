// Metrics: the series a manager records, label escaping, bounded labels, and
// an exposition that promtool accepts.
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <sys/wait.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include "test_support.hpp"

using namespace lockext;
using namespace lockext::test;

namespace {

// Whether text has this exact sample line.
bool has_line(const std::string &text, const std::string &line) {
    return text.find(line + "\n") != std::string::npos;
}

// Whether promtool is on the PATH.
bool have_promtool() {
    return std::system("command -v promtool > /dev/null 2>&1") == 0;
}

// Run `promtool check metrics` on text; its exit status and output.
std::pair<int, std::string> promtool_check(const std::string &text) {
    const auto dir = std::filesystem::temp_directory_path();
    const auto file = dir / ("lockext-metrics-" + std::to_string(getpid()) + ".prom");
    const auto out = dir / ("lockext-metrics-" + std::to_string(getpid()) + ".out");
    std::ofstream(file) << text;
    const std::string cmd =
        "promtool check metrics < '" + file.string() + "' > '" + out.string() + "' 2>&1";
    const int status = std::system(cmd.c_str());
    std::ifstream in(out);
    std::string output((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::filesystem::remove(file);
    std::filesystem::remove(out);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

}  // namespace

BOOST_AUTO_TEST_SUITE(metrics, *boost::unit_test::precondition(lockext::test::LocalRun{}))

// A manager records acquires by outcome, waits and holds, under the class
// its mapper gives; the raw lock names never appear.
BOOST_AUTO_TEST_CASE(manager_records_series) {
    auto registry = std::make_shared<Metrics>();
    auto locks = std::make_unique<LockManager>(
        detail::make_memory_backend(),
        ConnectOptions{.metrics = registry, .lock_class = [](std::string_view name) {
                           return std::string(name.substr(0, name.find(':')));
                       }});
    {
        Lock a = locks->acquire("jobs:secret-name-1", {.ttl = 10s});
        Lock b = locks->acquire("jobs:secret-name-2", {.ttl = 10s});
        BOOST_TEST(!locks->try_acquire("jobs:secret-name-1", {.ttl = 10s}).has_value());
        Lock c = locks->acquire("reports:secret-name-3", {.ttl = 10s});
    }
    const std::string text = registry->expose();
    BOOST_TEST_MESSAGE(text);
    BOOST_TEST(has_line(
        text, R"(lockext_acquire_total{backend="memory",class="jobs",result="acquired"} 2)"));
    BOOST_TEST(has_line(
        text, R"(lockext_acquire_total{backend="memory",class="jobs",result="not_obtained"} 1)"));
    BOOST_TEST(has_line(
        text, R"(lockext_acquire_total{backend="memory",class="reports",result="acquired"} 1)"));
    BOOST_TEST(has_line(text, R"(lockext_wait_seconds_count{backend="memory",class="jobs"} 3)"));
    BOOST_TEST(has_line(text, R"(lockext_hold_seconds_count{backend="memory",class="jobs"} 2)"));
    BOOST_TEST(has_line(
        text, R"(lockext_hold_seconds_bucket{backend="memory",class="jobs",le="+Inf"} 2)"));
    BOOST_TEST(has_line(text, R"(lockext_hold_seconds_count{backend="memory",class="reports"} 1)"));
    BOOST_TEST(text.find("# TYPE lockext_acquire_total counter") != std::string::npos);
    BOOST_TEST(text.find("# TYPE lockext_wait_seconds histogram") != std::string::npos);
    BOOST_TEST(text.find("# HELP lockext_hold_seconds ") != std::string::npos);
    BOOST_TEST(text.find("secret-name") == std::string::npos);
}

// Releases are counted by backend and outcome: held, not_held (the lease had
// run out), error (the backend call failed; the retry counts again). A
// repeated release() that reaches no backend counts nothing.
BOOST_AUTO_TEST_CASE(releases_are_counted) {
    // Fails the first release it sees, then passes everything through.
    class FailFirstRelease final : public detail::Backend {
      public:
        // Decorate inner.
        explicit FailFirstRelease(std::shared_ptr<detail::Backend> inner)
            : inner_(std::move(inner)) {}
        // The wrapped backend's kind.
        std::string_view kind() const noexcept override {
            return inner_->kind();
        }
        // Pass through.
        std::optional<detail::Lease> acquire(std::string_view name,
                                             const LockOptions &options) override {
            return inner_->acquire(name, options);
        }
        // Pass through.
        std::optional<std::chrono::system_clock::time_point> renew(
            const detail::Lease &lease, std::chrono::milliseconds ttl) override {
            return inner_->renew(lease, ttl);
        }
        // Fail once, then pass through.
        bool release(const detail::Lease &lease) override {
            if (!failed_.exchange(true))
                throw BackendUnavailable("injected: release unreachable");
            return inner_->release(lease);
        }

      private:
        std::shared_ptr<detail::Backend> inner_;
        std::atomic<bool> failed_{false};
    };

    auto registry = std::make_shared<Metrics>();
    LockManager locks(std::make_shared<FailFirstRelease>(detail::make_memory_backend()),
                      {.metrics = registry});
    {
        Lock failing = locks.acquire("release-count-a", {.ttl = 10s});
        BOOST_CHECK_THROW(failing.release(), BackendUnavailable);  // error
        BOOST_TEST(failing.release());                             // held
        BOOST_TEST(!failing.release());                            // no backend call
    }
    Lock expired = locks.acquire("release-count-b", {.ttl = 20ms, .auto_renew = false});
    std::this_thread::sleep_for(60ms);
    BOOST_TEST(!expired.release());  // not_held
    // held, released by the destructor at the end of the statement
    (void)locks.acquire("release-count-c", {.ttl = 10s});
    const std::string text = registry->expose();
    BOOST_TEST_MESSAGE(text);
    BOOST_TEST(has_line(text, R"(lockext_releases_total{backend="memory",result="held"} 2)"));
    BOOST_TEST(has_line(text, R"(lockext_releases_total{backend="memory",result="not_held"} 1)"));
    BOOST_TEST(has_line(text, R"(lockext_releases_total{backend="memory",result="error"} 1)"));
    BOOST_TEST(text.find("# TYPE lockext_releases_total counter") != std::string::npos);
    // Every acquire was counted, and every lease's hold once.
    BOOST_TEST(has_line(
        text, R"(lockext_acquire_total{backend="memory",class="default",result="acquired"} 3)"));
    BOOST_TEST(has_line(text, R"(lockext_hold_seconds_count{backend="memory",class="default"} 3)"));
}

// The public count_release() records into the same family.
BOOST_AUTO_TEST_CASE(count_release_by_hand) {
    Metrics m;
    m.count_release("postgres", "held");
    m.count_release("postgres", "held");
    m.count_release("postgres", "not_held");
    const std::string text = m.expose();
    BOOST_TEST(has_line(text, R"(lockext_releases_total{backend="postgres",result="held"} 2)"));
    BOOST_TEST(has_line(text, R"(lockext_releases_total{backend="postgres",result="not_held"} 1)"));
}

// Without a mapper every lock is counted as class "default".
BOOST_AUTO_TEST_CASE(default_class) {
    auto registry = std::make_shared<Metrics>();
    LockManager locks(detail::make_memory_backend(), {.metrics = registry});
    locks.acquire("some-lock-name", {.ttl = 10s}).release();
    const std::string text = registry->expose();
    BOOST_TEST(has_line(
        text, R"(lockext_acquire_total{backend="memory",class="default",result="acquired"} 1)"));
    BOOST_TEST(text.find("some-lock-name") == std::string::npos);
    BOOST_TEST(&locks.metrics() == registry.get());
}

// Label values are escaped: backslash, double quote, newline.
BOOST_AUTO_TEST_CASE(label_values_are_escaped) {
    Metrics m;
    m.count_acquire("memory", "we\"ird\\cl\nass", "acquired");
    const std::string text = m.expose();
    BOOST_TEST(has_line(
        text,
        R"(lockext_acquire_total{backend="memory",class="we\"ird\\cl\nass",result="acquired"} 1)"));
}

// Histograms: cumulative buckets, _sum and _count.
BOOST_AUTO_TEST_CASE(histogram_buckets) {
    Metrics m;
    m.observe_hold("memory", "c", 0.0003);
    m.observe_hold("memory", "c", 0.2);
    m.observe_hold("memory", "c", 120.0);
    const std::string text = m.expose();
    BOOST_TEST(
        has_line(text, R"(lockext_hold_seconds_bucket{backend="memory",class="c",le="0.0005"} 1)"));
    BOOST_TEST(
        has_line(text, R"(lockext_hold_seconds_bucket{backend="memory",class="c",le="0.25"} 2)"));
    BOOST_TEST(
        has_line(text, R"(lockext_hold_seconds_bucket{backend="memory",class="c",le="60"} 2)"));
    BOOST_TEST(
        has_line(text, R"(lockext_hold_seconds_bucket{backend="memory",class="c",le="+Inf"} 3)"));
    BOOST_TEST(has_line(text, R"(lockext_hold_seconds_count{backend="memory",class="c"} 3)"));
    BOOST_TEST(text.find(R"(lockext_hold_seconds_sum{backend="memory",class="c"} 120.2)") !=
               std::string::npos);
}

// Counting from several threads loses nothing.
BOOST_AUTO_TEST_CASE(concurrent_counts_are_exact) {
    Metrics m;
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; t++) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < 20000; i++) {
                m.count_acquire("memory", t % 2 ? "odd" : "even", "acquired");
                m.observe_wait("memory", "all", 0.001);
                m.count_renewal("memory", "ok");
            }
        });
    }
    for (auto &t : threads)
        t.join();
    const std::string text = m.expose();
    BOOST_TEST(has_line(
        text, R"(lockext_acquire_total{backend="memory",class="even",result="acquired"} 40000)"));
    BOOST_TEST(has_line(
        text, R"(lockext_acquire_total{backend="memory",class="odd",result="acquired"} 40000)"));
    BOOST_TEST(has_line(text, R"(lockext_wait_seconds_count{backend="memory",class="all"} 80000)"));
    BOOST_TEST(has_line(text, R"(lockext_renewals_total{backend="memory",result="ok"} 80000)"));
}

// Two registries never see each other's counts (the per-thread caches are per registry).
BOOST_AUTO_TEST_CASE(registries_are_separate) {
    auto a = std::make_unique<Metrics>();
    a->count_lost("memory", "x");
    auto b = std::make_unique<Metrics>();
    b->count_lost("memory", "x");
    b->count_lost("memory", "x");
    a.reset();
    auto c = std::make_unique<Metrics>();  // may reuse a's address
    c->count_lost("memory", "x");
    BOOST_TEST(has_line(b->expose(), R"(lockext_lost_leases_total{backend="memory",class="x"} 2)"));
    BOOST_TEST(has_line(c->expose(), R"(lockext_lost_leases_total{backend="memory",class="x"} 1)"));
}

// promtool accepts the exposition, empty and full (with awkward labels).
BOOST_AUTO_TEST_CASE(promtool_accepts_exposition) {
    if (!have_promtool()) {
        BOOST_TEST_MESSAGE("promtool not found on PATH: exposition not checked by promtool");
        return;
    }
    Metrics empty;
    auto [empty_status, empty_output] = promtool_check(empty.expose());
    BOOST_TEST(empty_status == 0, "promtool on empty registry: " << empty_output);

    auto registry = std::make_shared<Metrics>();
    LockManager locks(detail::make_memory_backend(), {.metrics = registry});
    {
        Lock a = locks.acquire("promtool-check", {.ttl = 10s});
        BOOST_TEST(!locks.try_acquire("promtool-check", {.ttl = 10s}).has_value());
        a.renew();
    }
    registry->count_lost("memory", "default");
    registry->count_renewal("memory", "error");
    registry->count_acquire("memory", "we\"ird\\cl\nass", "error");
    registry->observe_wait("memory", "slow", 75.0);
    const std::string text = registry->expose();
    auto [status, output] = promtool_check(text);
    BOOST_TEST(status == 0, "promtool check metrics: " << output << "\n" << text);
}

BOOST_AUTO_TEST_SUITE_END()
