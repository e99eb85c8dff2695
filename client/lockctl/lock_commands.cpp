// lockctl: the lock commands: run, holders, release and force-release.
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <iomanip>
#include <iostream>
#include <pqxx/pqxx>
#include <sstream>
#include <thread>

#include "child_process.hpp"
#include "lockext/pg.hpp"
#include "cli.hpp"
#include "metrics_server.hpp"
#include "signals.hpp"

namespace lockctl {

namespace {

using namespace std::chrono_literals;
using SystemClock = std::chrono::system_clock;

// An eventfd that one thread signals and another polls.
class Event {
  public:
    Event() : fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}
    ~Event() {
        close(fd_);
    }
    Event(const Event &) = delete;
    Event &operator=(const Event &) = delete;
    // Make fd() readable.
    void set() const {
        const std::uint64_t one = 1;
        if (write(fd_, &one, sizeof(one)) < 0) {
            // Only fails when the counter would overflow: it is set anyway.
        }
    }
    // Make fd() unreadable again.
    void clear() const {
        std::uint64_t count;
        if (read(fd_, &count, sizeof(count)) < 0) {
            // EAGAIN: it was not set.
        }
    }
    int fd() const {
        return fd_;
    }

  private:
    int fd_;
};

// The lock mode of --mode (default exclusive).
lockext::Mode parse_mode(const Args &args) {
    const std::string mode = args.get("mode").value_or("exclusive");
    if (mode == "exclusive")
        return lockext::Mode::exclusive;
    if (mode == "shared")
        return lockext::Mode::shared;
    if (mode == "semaphore")
        return lockext::Mode::semaphore;
    throw usage_error("invalid --mode '" + mode + "': use exclusive, shared or semaphore");
}

// The one NAME positional of a lock command.
std::string lock_name(const Args &args, std::string_view command) {
    if (args.positionals.size() != 1)
        throw usage_error(std::string(command) + " needs exactly one lock NAME (see lockctl " +
                          std::string(command) + " --help)");
    return args.positionals[0];
}

// Wait for the lock on a helper thread, so that a signal can still end
// lockctl while the backend waits (the handled signals are blocked). On a
// signal, lockctl exits at once with 128 + N; a lease granted in that
// instant runs out by its TTL.
lockext::Lock acquire_interruptibly(lockext::LockManager &locks, const std::string &name,
                                    const lockext::LockOptions &options, HandledSignals &signals) {
    Event done;
    std::optional<lockext::Lock> lock;
    std::exception_ptr error;
    std::thread waiter([&] {
        try {
            lock.emplace(locks.acquire(name, options));
        } catch (...) {
            error = std::current_exception();
        }
        done.set();
    });
    for (;;) {
        pollfd fds[2] = {{done.fd(), POLLIN, 0}, {signals.fd(), POLLIN, 0}};
        if (poll(fds, 2, -1) < 0)
            continue;
        if (fds[0].revents != 0)
            break;
        if (auto info = signals.take()) {
            std::cerr << "lockctl: " << strsignal(static_cast<int>(info->ssi_signo))
                      << " while waiting for '" << name << "'\n";
            std::_Exit(128 + static_cast<int>(info->ssi_signo));
        }
    }
    waiter.join();
    if (error)
        std::rethrow_exception(error);
    return std::move(*lock);
}

// "1.2s", "3m04s", "2h05m" for a duration (negative: "-" + it).
std::string human(std::chrono::milliseconds d) {
    if (d < 0ms)
        return "-" + human(-d);
    std::ostringstream out;
    const long long ms = d.count();
    if (ms < 60'000)
        out << std::fixed << std::setprecision(1) << static_cast<double>(ms) / 1000.0 << "s";
    else if (ms < 3'600'000)
        out << ms / 60'000 << "m" << std::setw(2) << std::setfill('0') << (ms / 1000) % 60 << "s";
    else
        out << ms / 3'600'000 << "h" << std::setw(2) << std::setfill('0') << (ms / 60'000) % 60
            << "m";
    return out.str();
}

// The holders table, as lines.
std::string holders_table(const std::vector<lockext::HolderInfo> &holders) {
    const auto now = SystemClock::now();
    std::vector<std::vector<std::string>> rows;
    rows.push_back({"NAME", "MODE", "OWNER", "TOKEN", "HELD FOR", "EXPIRES IN", "WAITERS"});
    for (const auto &h : holders) {
        auto ms = [](SystemClock::duration d) {
            return std::chrono::duration_cast<std::chrono::milliseconds>(d);
        };
        rows.push_back({h.name, std::string(lockext::to_string(h.mode)), h.owner,
                        std::to_string(h.token), human(ms(now - h.acquired_at)),
                        human(ms(h.expires_at - now)), std::to_string(h.waiters)});
    }
    std::vector<std::size_t> width(rows[0].size(), 0);
    for (const auto &r : rows)
        for (std::size_t c = 0; c < r.size(); c++)
            width[c] = std::max(width[c], r[c].size());
    std::ostringstream out;
    for (const auto &r : rows) {
        for (std::size_t c = 0; c < r.size(); c++) {
            out << r[c];
            if (c + 1 < r.size())
                out << std::string(width[c] - r[c].size() + 2, ' ');
        }
        out << "\n";
    }
    if (holders.empty())
        out << "(no locks held)\n";
    return out.str();
}

// The holders, or a clear failure where the backend has no global view.
std::vector<lockext::HolderInfo> fetch_holders(lockext::LockManager &locks) {
    try {
        auto holders = locks.holders();
        std::sort(holders.begin(), holders.end(), [](const auto &a, const auto &b) {
            return a.name != b.name ? a.name < b.name : a.token < b.token;
        });
        return holders;
    } catch (const lockext::InvalidArgument &) {
        throw Failure(exit_status::unsupported,
                      "the " + std::string(locks.backend()) +
                          " backend has no global view of holders (each client knows only its "
                          "own locks); use a postgres:// URL");
    } catch (...) {
        rethrow_as_failure("holders");
    }
}

// Local wall-clock time as HH:MM:SS.
std::string clock_now() {
    const std::time_t t = SystemClock::to_time_t(SystemClock::now());
    std::tm tm{};
    localtime_r(&t, &tm);
    char buf[16];
    std::strftime(buf, sizeof(buf), "%H:%M:%S", &tm);
    return buf;
}

}  // namespace

// lockctl run NAME [options] -- CMD [ARGS...]
int cmd_run(const Args &args) {
    const std::string name = lock_name(args, "run");
    if (args.command.empty())
        throw usage_error("run needs a command after -- (see lockctl run --help)");
    lockext::LockOptions options;
    options.ttl = args.duration("ttl", 30s);
    if (options.ttl <= 0ms)
        throw usage_error("--ttl must be positive");
    options.wait =
        args.get("wait") ? args.duration("wait", 0ms) : lockext::LockOptions::wait_forever;
    options.mode = parse_mode(args);
    if (auto n = args.get("max-holders"))
        options.max_holders = static_cast<int>(parse_count(*n, "--max-holders", 1, 1'000'000));
    if (auto owner = args.get("owner"))
        options.owner = *owner;
    const auto grace = args.duration("kill-grace", 10s);

    HandledSignals signals;  // before connect: the library's threads inherit the mask
    auto locks = connect_backend(backend_url(args));
    std::optional<MetricsServer> metrics;
    if (auto listen = args.get("metrics-listen"))
        metrics.emplace(*listen, [&locks] { return locks->metrics().expose(); });

    std::optional<lockext::Lock> lock;
    try {
        lock.emplace(acquire_interruptibly(*locks, name, options, signals));
    } catch (const lockext::NotObtained &) {
        std::cerr << "lockctl: '" << name << "' was not obtained within " << human(options.wait)
                  << "\n";
        return exit_status::not_obtained;
    } catch (...) {
        rethrow_as_failure("acquire '" + name + "'");
    }
    Event lost;
    lock->on_lost([&lost] { lost.set(); });

    // Its own process group unless it may be interactive (see Child).
    Child child(args.command,
                {{"LOCKEXT_NAME", name}, {"LOCKEXT_TOKEN", std::to_string(lock->token())}}, nullptr,
                !in_terminal_foreground());
    bool was_lost = false;
    std::optional<std::chrono::steady_clock::time_point> kill_at;
    int status = 0;
    for (;;) {
        pollfd fds[3] = {
            {child.exit_fd(), POLLIN, 0}, {signals.fd(), POLLIN, 0}, {lost.fd(), POLLIN, 0}};
        int timeout = -1;
        if (kill_at)
            timeout = static_cast<int>(
                std::max<long long>(0, std::chrono::duration_cast<std::chrono::milliseconds>(
                                           *kill_at - std::chrono::steady_clock::now())
                                           .count()));
        if (poll(fds, 3, timeout) < 0)
            continue;
        if (fds[0].revents != 0) {
            status = child.reap();
            if (was_lost)
                child.kill_leftovers();  // what it started must not run on unlocked
            break;
        }
        if (fds[1].revents != 0) {
            if (auto info = signals.take(); info && HandledSignals::sent_by_process(*info))
                child.signal(static_cast<int>(info->ssi_signo));
        }
        if (fds[2].revents != 0) {
            lost.clear();
            if (!was_lost) {
                was_lost = true;
                // Signal first: the message may fail (a closed stderr pipe),
                // and the command must not go on without the lease.
                child.signal(SIGTERM);
                kill_at = std::chrono::steady_clock::now() + grace;
                // One write: the command's shell reports its SIGTERM on the
                // same stderr, and piecewise writes let it land mid-line.
                std::ostringstream msg;
                msg << "lockctl: the lease on '" << name
                    << "' was lost; stopping the command (SIGTERM, SIGKILL after " << human(grace)
                    << ")\n";
                std::cerr << msg.str() << std::flush;
            }
        }
        if (kill_at && std::chrono::steady_clock::now() >= *kill_at) {
            child.signal(SIGKILL);
            kill_at.reset();
        }
    }
    // Whether the lease was still ours when the command ended, as far as
    // this process can tell: a release that fails cannot say, so the local
    // view (renewals confirmed within the TTL) decides then.
    const bool held_at_end = lock->is_held();
    bool held = false;
    try {
        held = lock->release();
    } catch (const std::exception &e) {
        // The lease runs out by its TTL; the command has finished either way.
        std::cerr << "lockctl: could not release '" << name << "': " << e.what() << "\n";
        held = held_at_end;
    }
    if (was_lost)
        return exit_status::lease_lost;
    if (!held) {
        std::cerr << "lockctl: the lease on '" << name
                  << "' had run out before the command finished\n";
        return exit_status::lease_lost;
    }
    return status;
}

// lockctl holders [--watch] [--interval D]
int cmd_holders(const Args &args) {
    if (!args.positionals.empty())
        throw usage_error("holders takes no arguments (see lockctl holders --help)");
    const auto interval = args.duration("interval", 1s);
    if (interval < 100ms)
        throw usage_error("--interval must be at least 100ms");
    HandledSignals signals;
    auto locks = connect_backend(backend_url(args));
    if (!args.flag("watch")) {
        std::cout << holders_table(fetch_holders(*locks));
        return exit_status::ok;
    }
    const bool tty = isatty(STDOUT_FILENO) == 1;
    if (tty)
        std::cout << "\033[?25l";  // hide the cursor while redrawing
    for (;;) {
        std::string frame;
        try {
            frame = holders_table(fetch_holders(*locks));
        } catch (const Failure &f) {
            if (f.status() != exit_status::unavailable)
                throw;
            // A watch outlives a server restart: say so and keep trying.
            frame = std::string("lockctl: ") + f.what() + "\n";
        }
        if (tty)
            std::cout << "\033[H\033[2J";
        std::cout << "lockctl holders (" << locks->backend() << ")  every " << human(interval)
                  << "  " << clock_now() << "  Ctrl-C to quit\n\n"
                  << frame << (tty ? "" : "\n") << std::flush;
        pollfd p{signals.fd(), POLLIN, 0};
        if (poll(&p, 1, static_cast<int>(interval.count())) > 0 && signals.take())
            break;
    }
    if (tty)
        std::cout << "\033[?25h" << std::flush;
    return exit_status::ok;
}

// lockctl release NAME --token T  (PostgreSQL: a lease may be released from any session)
int cmd_release(const Args &args) {
    const std::string name = lock_name(args, "release");
    auto token_text = args.get("token");
    if (!token_text)
        throw usage_error(
            "release needs --token T (the holder's fencing token); "
            "force-release releases every holder");
    const long long token = parse_count(*token_text, "--token", 1, INT64_MAX);
    const std::string url = backend_url(args);
    if (!is_postgres_url(url)) {
        (void)connect_backend(url);  // a bad URL is still a usage error
        throw Failure(exit_status::unsupported,
                      "release by token needs the postgres backend: memory and redis leases are "
                      "released by the process that holds them");
    }
    try {
        pqxx::connection conn(lockext::pg::libpq_url(url));
        pqxx::nontransaction tx(conn);
        const bool released =
            tx.exec_params1("SELECT lockext.release($1, $2)", name, token)[0].as<bool>();
        if (!released) {
            std::cerr << "lockctl: '" << name << "' is not held with token " << token << "\n";
            return exit_status::not_held;
        }
        std::cout << "released '" << name << "' (token " << token << ")\n";
        return exit_status::ok;
    } catch (...) {
        rethrow_as_failure("release '" + name + "'");
    }
}

// lockctl force-release NAME  (administrators)
int cmd_force_release(const Args &args) {
    const std::string name = lock_name(args, "force-release");
    auto locks = connect_backend(backend_url(args));
    int released = 0;
    try {
        released = locks->force_release(name);
    } catch (const lockext::InvalidArgument &e) {
        throw Failure(exit_status::unsupported, e.what());
    } catch (...) {
        rethrow_as_failure("force-release '" + name + "'");
    }
    if (released == 0) {
        std::cerr << "lockctl: '" << name << "' had no holders\n";
        return exit_status::not_held;
    }
    std::cout << "released " << released << " holder" << (released == 1 ? "" : "s") << " of '"
              << name << "'\n";
    return exit_status::ok;
}

}  // namespace lockctl
