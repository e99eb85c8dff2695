// Helpers for the Redis tests: private redis-server processes the tests start,
// kill, pause and restart; a raw hiredis connection to look at (and fence
// writes in) a node from outside the client; child processes running the
// client (the test binary re-executed in a role, see redis_test.cpp); and
// overlap counting from a test's own records.
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <hiredis/hiredis.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "lockext/lockext.hpp"
#include "test_support.hpp"

extern char **environ;

namespace lockext::test {

// A loopback TCP port nothing listens on right now.
inline int free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof addr;
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr *>(&addr), &len) != 0)
        throw std::runtime_error("cannot find a free port");
    const int port = ntohs(addr.sin_port);
    ::close(fd);
    return port;
}

// A raw connection to a node, to look at lock data and fence writes from
// outside the client.
class RawRedis {
  public:
    // Connect (and AUTH) or throw.
    explicit RawRedis(int port, const std::string &password = "") {
        timeval tv{2, 0};
        ctx_ = redisConnectWithTimeout("127.0.0.1", port, tv);
        if (ctx_ == nullptr || ctx_->err != 0) {
            redisFree(ctx_);  // the destructor does not run for a throwing constructor
            throw std::runtime_error("raw redis connect failed");
        }
        redisSetTimeout(ctx_, tv);
        if (!password.empty())
            command({"AUTH", password});
    }
    // Close the connection.
    ~RawRedis() {
        redisFree(ctx_);
    }
    RawRedis(const RawRedis &) = delete;
    RawRedis &operator=(const RawRedis &) = delete;

    // Run a command; the reply as text (integers in decimal, arrays joined by
    // '|', nil as "(nil)"); throws on I/O errors.
    std::string command(const std::vector<std::string> &args) {
        std::vector<const char *> argv;
        std::vector<size_t> lens;
        for (const auto &a : args) {
            argv.push_back(a.data());
            lens.push_back(a.size());
        }
        auto *r = static_cast<redisReply *>(
            redisCommandArgv(ctx_, static_cast<int>(argv.size()), argv.data(), lens.data()));
        if (r == nullptr)
            throw std::runtime_error(std::string("raw redis: ") + ctx_->errstr);
        std::string text = render(r);
        freeReplyObject(r);
        return text;
    }

    // The reply to a command as an integer.
    long long integer(const std::vector<std::string> &args) {
        return std::stoll(command(args));
    }

  private:
    // A reply as text.
    static std::string render(const redisReply *r) {
        switch (r->type) {
            case REDIS_REPLY_INTEGER:
                return std::to_string(r->integer);
            case REDIS_REPLY_NIL:
                return "(nil)";
            case REDIS_REPLY_ARRAY: {
                std::string out;
                for (std::size_t i = 0; i < r->elements; i++)
                    out += (i ? "|" : "") + render(r->element[i]);
                return out;
            }
            case REDIS_REPLY_ERROR:
                return "ERR:" + std::string(r->str, r->len);
            default:
                return std::string(r->str, r->len);
        }
    }

    redisContext *ctx_ = nullptr;
};

// A private redis-server on a loopback port, started by the test and killed
// when it goes. No persistence: a restart loses everything.
class RedisServer {
  public:
    // Start on a free port (or port), optionally with requirepass.
    explicit RedisServer(std::string password = "", int port = 0)
        : password_(std::move(password)), port_(port ? port : free_port()) {
        char tmpl[] = "/tmp/lockext-redis-test.XXXXXX";
        if (::mkdtemp(tmpl) == nullptr)
            throw std::runtime_error("mkdtemp failed");
        dir_ = tmpl;
        start();
    }
    // Kill the server and remove its directory.
    ~RedisServer() {
        kill_now();
        std::error_code ignored;
        std::filesystem::remove_all(dir_, ignored);
    }
    RedisServer(const RedisServer &) = delete;
    RedisServer &operator=(const RedisServer &) = delete;

    // "127.0.0.1:port".
    std::string address() const {
        return "127.0.0.1:" + std::to_string(port_);
    }
    // Its port.
    int port() const {
        return port_;
    }

    // SIGKILL the server and reap it.
    void kill_now() {
        if (pid_ <= 0)
            return;
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        pid_ = -1;
    }

    // Start again on the same port, empty (as a node restarted without persistence).
    void restart() {
        kill_now();
        start();
    }

  private:
    // fork/exec redis-server and wait until it answers PING.
    void start() {
        const std::string port = std::to_string(port_);
        const std::string log = dir_ + "/redis.log";
        std::vector<std::string> args = {
            "redis-server", "--port",      port,     "--bind",    "127.0.0.1",
            "--dir",        dir_,          "--save", "",          "--appendonly",
            "no",           "--daemonize", "no",     "--logfile", log};
        if (!password_.empty()) {
            args.push_back("--requirepass");
            args.push_back(password_);
        }
        std::vector<char *> argv;
        for (auto &a : args)
            argv.push_back(a.data());
        argv.push_back(nullptr);
        pid_ = ::fork();
        if (pid_ < 0)
            throw std::runtime_error("fork failed");
        if (pid_ == 0) {
            ::execvp("redis-server", argv.data());
            ::_exit(127);
        }
        const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (std::chrono::steady_clock::now() < until) {
            try {
                // Ours, not another program's server that took the port first.
                RawRedis raw(port_, password_);
                if (raw.command({"INFO", "server"})
                        .find("process_id:" + std::to_string(pid_) + "\r") != std::string::npos)
                    return;
            } catch (const std::exception &) {
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        throw std::runtime_error("redis-server did not start on port " + port);
    }

    std::string password_;
    int port_;
    std::string dir_;
    pid_t pid_ = -1;
};

// Whether redis-server can be run here.
inline bool have_redis_server() {
    return std::system("redis-server --version >/dev/null 2>&1") == 0;
}

// A fenced store inside a node: accepts a write only with a token above the
// last accepted one, and logs accepted writes ("token writer") in order.
// What a resource guarded by fencing tokens does.
inline bool fenced_write(RawRedis &raw, const std::string &resource, long long token,
                         const std::string &writer) {
    static const std::string script = R"lua(
        local last = tonumber(redis.call('GET', KEYS[1]) or '0')
        if tonumber(ARGV[1]) <= last then return 0 end
        redis.call('SET', KEYS[1], ARGV[1])
        redis.call('RPUSH', KEYS[2], ARGV[1] .. ' ' .. ARGV[2])
        return 1)lua";
    return raw.integer({"EVAL", script, "2", "fence:" + resource, "fence-log:" + resource,
                        std::to_string(token), writer}) == 1;
}

// A child process running this test binary in a role (see redis_test.cpp),
// with pipes to its stdin and from its stdout.
class ChildProcess {
  public:
    // Start /proc/self/exe with env (NAME=value entries) added.
    explicit ChildProcess(const std::vector<std::string> &env) {
        int in[2], out[2];
        if (::pipe(in) != 0 || ::pipe(out) != 0)
            throw std::runtime_error("pipe failed");
        std::vector<std::string> envs;
        for (char **e = environ; *e != nullptr; e++)
            envs.emplace_back(*e);
        envs.insert(envs.end(), env.begin(), env.end());
        std::vector<char *> envp;
        for (auto &e : envs)
            envp.push_back(e.data());
        envp.push_back(nullptr);
        std::string self = "/proc/self/exe";
        char *argv[] = {self.data(), nullptr};
        pid_ = ::fork();
        if (pid_ < 0)
            throw std::runtime_error("fork failed");
        if (pid_ == 0) {
            ::dup2(in[0], 0);
            ::dup2(out[1], 1);
            ::close(in[0]);
            ::close(in[1]);
            ::close(out[0]);
            ::close(out[1]);
            ::execve(self.c_str(), argv, envp.data());
            ::_exit(127);
        }
        ::close(in[0]);
        ::close(out[1]);
        to_child_ = in[1];
        from_child_ = ::fdopen(out[0], "r");
    }
    // Kill the child if it still runs, and close the pipes.
    ~ChildProcess() {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
        if (from_child_ != nullptr)
            std::fclose(from_child_);
        ::close(to_child_);
    }
    ChildProcess(const ChildProcess &) = delete;
    ChildProcess &operator=(const ChildProcess &) = delete;

    // The next line the child printed (without the newline), "" at EOF.
    std::string read_line() {
        char buf[512];
        if (std::fgets(buf, sizeof buf, from_child_) == nullptr)
            return "";
        std::string line(buf);
        if (!line.empty() && line.back() == '\n')
            line.pop_back();
        return line;
    }
    // Send a line to the child's stdin.
    void write_line(const std::string &line) {
        const std::string text = line + "\n";
        [[maybe_unused]] const ssize_t n = ::write(to_child_, text.data(), text.size());
    }
    // Send a signal (SIGSTOP, SIGCONT, SIGKILL).
    void signal(int sig) {
        ::kill(pid_, sig);
    }
    // Wait for the child to exit; its exit status (or -1 if it was killed).
    int wait() {
        int status = 0;
        ::waitpid(pid_, &status, 0);
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }

  private:
    pid_t pid_ = -1;
    int to_child_ = -1;
    FILE *from_child_ = nullptr;
};

// Options with the fields the Redis tests set.
inline LockOptions opts(std::chrono::milliseconds ttl,
                        std::chrono::milliseconds wait = std::chrono::milliseconds(0),
                        Mode mode = Mode::exclusive, int max_holders = 1, bool auto_renew = true) {
    LockOptions o;
    o.ttl = ttl;
    o.wait = wait;
    o.mode = mode;
    o.max_holders = max_holders;
    o.auto_renew = auto_renew;
    return o;
}

// Milliseconds since t.
inline long long ms_since(Clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

// Enables a suite of tests on private servers on the redis:// run only (they
// use only their own servers, so once per build is enough), and says why it
// is skipped otherwise.
struct RedisRunGiven {
    // Whether the suite runs, with the reason when it does not.
    boost::test_tools::assertion_result operator()(boost::unit_test::test_unit_id) const {
        boost::test_tools::assertion_result ok(url().starts_with("redis://") &&
                                               have_redis_server());
        if (!ok)
            ok.message() << "LOCKEXT_TEST_URL is not a redis:// URL (or redis-server is "
                            "missing); these tests start their own servers and run once, on "
                            "the redis:// run";
        return ok;
    }
};

// Three private nodes and the redlock:// URL over them.
struct ThreeNodes {
    RedisServer a, b, c;
    // redlock://a,b,c with short timeouts (a dead node must not stall anyone).
    std::string url() const {
        return "redlock://" + a.address() + "," + b.address() + "," + c.address() +
               "?timeout=300ms&connect_timeout=300ms";
    }
};

// Critical sections as a test recorded them; counts the ones that overlapped.
class SectionLog {
  public:
    using Clock = std::chrono::steady_clock;
    struct Section {
        Clock::time_point start, end;
        long long token;
    };

    // Record one section.
    void add(Clock::time_point start, Clock::time_point end, long long token) {
        std::lock_guard<std::mutex> g(mu_);
        sections_.push_back({start, end, token});
    }
    // Sections that began before an earlier-begun one had ended.
    int overlaps() const {
        auto s = sorted();
        int count = 0;
        Clock::time_point last_end{};
        for (const auto &x : s) {
            if (x.start < last_end)
                count++;
            last_end = std::max(last_end, x.end);
        }
        return count;
    }
    // Sections whose token is not above the previous recorded token, in start
    // order (sections recorded with token 0 have none and are skipped).
    int token_regressions() const {
        int count = 0;
        long long last = 0;
        for (const auto &x : sorted()) {
            if (x.token == 0)
                continue;
            count += x.token <= last ? 1 : 0;
            last = x.token;
        }
        return count;
    }
    // How many sections began at or after t.
    int started_after(Clock::time_point t) const {
        std::lock_guard<std::mutex> g(mu_);
        return static_cast<int>(std::count_if(sections_.begin(), sections_.end(),
                                              [t](const Section &x) { return x.start >= t; }));
    }
    // How many sections were recorded.
    std::size_t size() const {
        std::lock_guard<std::mutex> g(mu_);
        return sections_.size();
    }

  private:
    // A copy in start order.
    std::vector<Section> sorted() const {
        std::lock_guard<std::mutex> g(mu_);
        auto s = sections_;
        std::sort(s.begin(), s.end(),
                  [](const Section &a, const Section &b) { return a.start < b.start; });
        return s;
    }

    mutable std::mutex mu_;
    std::vector<Section> sections_;
};

}  // namespace lockext::test
