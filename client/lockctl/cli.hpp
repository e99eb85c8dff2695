// lockctl: shared pieces of the command-line tool (exit statuses, argument
// parsing, durations, backend connection) and the commands' entry points.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "lockext/lockext.hpp"

namespace lockctl {

// Exit statuses; the README lists them. A command run under `run` or `work`
// passes its own status through (128 + N when killed by signal N).
namespace exit_status {
constexpr int ok = 0;
constexpr int not_held = 1;       // release / force-release: nothing was held
constexpr int usage = 64;         // bad arguments, durations, URLs, unknown command
constexpr int data = 65;          // input the server rejected (bad JSON, ...)
constexpr int unavailable = 69;   // the backend cannot be reached
constexpr int internal = 70;      // a bug or an unexpected error
constexpr int not_obtained = 75;  // the lock was not obtained within --wait
constexpr int lease_lost = 76;    // the lease was lost while CMD ran; CMD was stopped
constexpr int permission = 77;    // the server refused (e.g. force-release without EXECUTE)
constexpr int unsupported = 78;   // the backend cannot do this (no global view, not PostgreSQL)
constexpr int cannot_execute = 126;
constexpr int command_not_found = 127;
}  // namespace exit_status

// An error that ends the command with `status` after printing its message as
// one line on stderr.
class Failure : public std::runtime_error {
  public:
    Failure(int status, const std::string &message)
        : std::runtime_error(message), status_(status) {}
    int status() const noexcept {
        return status_;
    }

  private:
    int status_;
};

// A usage error (exit 64).
inline Failure usage_error(const std::string &message) {
    return Failure(exit_status::usage, message);
}

// "500ms", "30s", "5m", "2h", "1.5s" as milliseconds; throws a usage error
// naming `what` otherwise. Zero is allowed; negative is not.
std::chrono::milliseconds parse_duration(std::string_view text, std::string_view what);

// A positive or zero integer option; throws a usage error naming `what` otherwise.
long long parse_count(std::string_view text, std::string_view what, long long min, long long max);

// Parsed command line of one command: --name value options, --flags,
// positionals, and the words after "--" (the command to run).
struct Args {
    std::map<std::string, std::string> options;
    std::set<std::string> flags;
    std::vector<std::string> positionals;
    std::vector<std::string> command;  // after "--"
    bool help = false;

    // The value of --name, if given.
    std::optional<std::string> get(const std::string &name) const;
    // The value of --name parsed as a duration, or `fallback`.
    std::chrono::milliseconds duration(const std::string &name,
                                       std::chrono::milliseconds fallback) const;
    // Whether --name was given.
    bool flag(const std::string &name) const {
        return flags.count(name) > 0;
    }
};

// What one command accepts: options that take a value, and boolean flags.
struct Spec {
    std::set<std::string> valued;
    std::set<std::string> boolean;
    bool takes_command = false;  // accepts "-- CMD [ARGS...]"
};

// Parse argv[first..] by `spec`; throws a usage error for anything unknown.
Args parse_args(int argc, char **argv, int first, const Spec &spec);

// The backend URL: --url, else $LOCKEXT_URL, else memory:.
std::string backend_url(const Args &args);

// A lock manager for the URL, with errors turned into lockctl failures.
std::unique_ptr<lockext::LockManager> connect_backend(const std::string &url);

// Whether the URL names PostgreSQL (postgres:// or postgresql://).
bool is_postgres_url(std::string_view url);

// Turn any exception from the client library or libpqxx into a Failure.
[[noreturn]] void rethrow_as_failure(std::string_view doing);

// The commands; each returns the process exit status.
int cmd_run(const Args &args);
int cmd_holders(const Args &args);
int cmd_release(const Args &args);
int cmd_force_release(const Args &args);
int cmd_enqueue(const Args &args);
int cmd_work(const Args &args);

}  // namespace lockctl
