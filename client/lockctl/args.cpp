// lockctl: argument parsing, durations, the backend URL and error mapping.
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <pqxx/pqxx>

#include "cli.hpp"

namespace lockctl {

namespace {

// `text` on one line, without trailing whitespace (server messages end in "\n").
std::string one_line(std::string text) {
    for (char &c : text)
        if (c == '\n' || c == '\r' || c == '\t')
            c = ' ';
    while (!text.empty() && text.back() == ' ')
        text.pop_back();
    return text;
}

// Exit status for a PostgreSQL error by its SQLSTATE.
int status_of_sqlstate(const std::string &state) {
    if (state.rfind("08", 0) == 0 || state == "55000" || state == "57P01" || state == "3D000")
        return exit_status::unavailable;
    if (state == "42501")
        return exit_status::permission;
    if (state.rfind("22", 0) == 0 || state.rfind("23", 0) == 0 || state == "42704" ||
        state == "42710")
        return exit_status::data;
    if (state == "42883" || state == "3F000")  // the extension is not installed
        return exit_status::unavailable;
    return exit_status::internal;
}

}  // namespace

// Milliseconds of a duration with a unit; see cli.hpp.
std::chrono::milliseconds parse_duration(std::string_view text, std::string_view what) {
    auto bad = [&] {
        return usage_error("invalid duration '" + std::string(text) + "' for " + std::string(what) +
                           ": use a number with ms, s, m or h (e.g. 500ms, 30s, 5m)");
    };
    if (text == "0")
        return std::chrono::milliseconds(0);
    std::size_t unit = 0;
    while (unit < text.size() && ((text[unit] >= '0' && text[unit] <= '9') || text[unit] == '.'))
        unit++;
    if (unit == 0 || unit == text.size())
        throw bad();
    const std::string number(text.substr(0, unit));
    if (number.find('.') != number.rfind('.') || number.front() == '.' || number.back() == '.')
        throw bad();
    const std::string_view suffix = text.substr(unit);
    double scale;
    if (suffix == "ms")
        scale = 1;
    else if (suffix == "s")
        scale = 1000;
    else if (suffix == "m")
        scale = 60'000;
    else if (suffix == "h")
        scale = 3'600'000;
    else
        throw bad();
    errno = 0;
    const double value = std::strtod(number.c_str(), nullptr) * scale;
    // Whole milliseconds, and at most about 290 million years.
    if (errno != 0 || !std::isfinite(value) || value > 9e15 || value != std::floor(value))
        throw bad();
    return std::chrono::milliseconds(static_cast<long long>(value));
}

// An integer option within [min, max]; see cli.hpp.
long long parse_count(std::string_view text, std::string_view what, long long min, long long max) {
    const std::string s(text);
    char *end = nullptr;
    errno = 0;
    const long long v = s.empty() ? 0 : std::strtoll(s.c_str(), &end, 10);
    if (s.empty() || errno != 0 || *end != '\0' || v < min || v > max)
        throw usage_error("invalid value '" + s + "' for " + std::string(what) +
                          ": expected a whole number from " + std::to_string(min) + " to " +
                          std::to_string(max));
    return v;
}

// The value of --name, if given.
std::optional<std::string> Args::get(const std::string &name) const {
    auto it = options.find(name);
    if (it == options.end())
        return std::nullopt;
    return it->second;
}

// The value of --name as a duration, or `fallback`.
std::chrono::milliseconds Args::duration(const std::string &name,
                                         std::chrono::milliseconds fallback) const {
    auto v = get(name);
    return v ? parse_duration(*v, "--" + name) : fallback;
}

// Parse the words after the command name; see cli.hpp.
Args parse_args(int argc, char **argv, int first, const Spec &spec) {
    Args args;
    for (int i = first; i < argc; i++) {
        const std::string word = argv[i];
        if (word == "--") {
            if (!spec.takes_command)
                throw usage_error("unexpected '--': this command runs no command");
            for (int j = i + 1; j < argc; j++)
                args.command.emplace_back(argv[j]);
            break;
        }
        if (word == "-h" || word == "--help") {
            args.help = true;
            continue;
        }
        if (word.size() > 2 && word.compare(0, 2, "--") == 0) {
            std::string name = word.substr(2);
            std::optional<std::string> value;
            if (auto eq = name.find('='); eq != std::string::npos) {
                value = name.substr(eq + 1);
                name.resize(eq);
            }
            if (spec.boolean.count(name)) {
                if (value)
                    throw usage_error("option --" + name + " takes no value");
                args.flags.insert(name);
            } else if (spec.valued.count(name)) {
                if (!value) {
                    if (i + 1 >= argc)
                        throw usage_error("option --" + name + " needs a value");
                    value = argv[++i];
                }
                args.options[name] = *value;
            } else {
                throw usage_error("unknown option --" + name);
            }
            continue;
        }
        if (word.size() > 1 && word[0] == '-' && !(word[1] >= '0' && word[1] <= '9'))
            throw usage_error("unknown option " + word);
        args.positionals.push_back(word);
    }
    return args;
}

// --url, else $LOCKEXT_URL, else memory:.
std::string backend_url(const Args &args) {
    if (auto url = args.get("url"))
        return *url;
    const char *env = std::getenv("LOCKEXT_URL");
    return env && *env ? std::string(env) : std::string("memory:");
}

// Whether the URL names PostgreSQL.
bool is_postgres_url(std::string_view url) {
    return url.rfind("postgres://", 0) == 0 || url.rfind("postgresql://", 0) == 0 ||
           url.rfind("postgres:", 0) == 0 || url.rfind("postgresql:", 0) == 0;
}

// A lock manager for the URL; connection errors become failures.
std::unique_ptr<lockext::LockManager> connect_backend(const std::string &url) {
    try {
        return lockext::connect(url);
    } catch (...) {
        rethrow_as_failure("connect");
    }
}

// Map the exception in flight to a Failure; see cli.hpp.
void rethrow_as_failure(std::string_view doing) {
    const std::string prefix = doing.empty() ? "" : std::string(doing) + ": ";
    try {
        throw;
    } catch (const Failure &) {
        throw;
    } catch (const lockext::InvalidArgument &e) {
        throw Failure(exit_status::usage, prefix + one_line(e.what()));
    } catch (const lockext::BackendUnavailable &e) {
        throw Failure(exit_status::unavailable, prefix + one_line(e.what()));
    } catch (const lockext::NotObtained &e) {
        throw Failure(exit_status::not_obtained, prefix + one_line(e.what()));
    } catch (const lockext::LockLost &e) {
        throw Failure(exit_status::lease_lost, prefix + one_line(e.what()));
    } catch (const pqxx::broken_connection &e) {
        throw Failure(exit_status::unavailable, prefix + one_line(e.what()));
    } catch (const pqxx::sql_error &e) {
        throw Failure(status_of_sqlstate(e.sqlstate()),
                      prefix + one_line(e.what()) + " (SQLSTATE " + e.sqlstate() + ")");
    } catch (const std::exception &e) {
        throw Failure(exit_status::internal, prefix + one_line(e.what()));
    }
}

}  // namespace lockctl
