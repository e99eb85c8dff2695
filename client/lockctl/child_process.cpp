// lockctl: child processes (fork and exec, tied to lockctl's life), waited
// for through a pidfd.
#include "child_process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "cli.hpp"

extern char **environ;

namespace lockctl {

namespace {

// A memfd holding `data`, positioned at its start (a pipe could fill up and
// block us before the child reads it).
int input_fd(const std::string &data) {
    int fd = memfd_create("lockctl-stdin", MFD_CLOEXEC);
    if (fd < 0)
        throw Failure(exit_status::internal, std::string("memfd_create: ") + std::strerror(errno));
    std::size_t done = 0;
    while (done < data.size()) {
        ssize_t n = write(fd, data.data() + done, data.size() - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            close(fd);
            throw Failure(exit_status::internal,
                          std::string("write stdin: ") + std::strerror(errno));
        }
        done += static_cast<std::size_t>(n);
    }
    lseek(fd, 0, SEEK_SET);
    return fd;
}

// The file execvp would run for `file` (itself when it has a slash, else
// the first executable regular file of that name on PATH) into `path`;
// 0, or the errno execvp would fail with.
int resolve_command(const std::string &file, std::string &path) {
    if (file.empty())
        return ENOENT;
    if (file.find('/') != std::string::npos) {
        path = file;
        return 0;
    }
    const char *env_path = getenv("PATH");
    const std::string search = env_path != nullptr ? env_path : "/bin:/usr/bin";
    int err = ENOENT;
    std::size_t begin = 0;
    for (;;) {
        const std::size_t end = search.find(':', begin);
        std::string dir = search.substr(begin, end == std::string::npos ? end : end - begin);
        const std::string candidate = (dir.empty() ? std::string(".") : dir) + "/" + file;
        // As execvp: a match that cannot run gives EACCES (126) unless a
        // later one runs.
        struct stat st;
        if (stat(candidate.c_str(), &st) == 0) {
            if (S_ISREG(st.st_mode) && access(candidate.c_str(), X_OK) == 0) {
                path = candidate;
                return 0;
            }
            err = EACCES;
        } else if (errno == EACCES) {
            err = EACCES;
        }
        if (end == std::string::npos)
            return err;
        begin = end + 1;
    }
}

}  // namespace

// Spawn the child; see child_process.hpp.
Child::Child(const std::vector<std::string> &argv,
             const std::vector<std::pair<std::string, std::string>> &env, const std::string *input,
             bool own_group)
    : own_group_(own_group) {
    if (argv.empty())
        throw usage_error("no command given after --");
    // Everything the child needs is built here: between fork and exec it may
    // only make async-signal-safe calls (another thread may hold malloc's lock).
    std::string path;
    if (const int err = resolve_command(argv[0], path); err != 0)
        throw Failure(err == ENOENT ? exit_status::command_not_found : exit_status::cannot_execute,
                      "cannot run '" + argv[0] + "': " + std::strerror(err));
    // The environment: ours, minus the names we set, plus ours.
    std::vector<std::string> env_strings;
    for (char **e = environ; *e != nullptr; e++) {
        std::string_view entry(*e);
        bool replaced = false;
        for (const auto &[k, v] : env)
            if (entry.size() > k.size() && entry.compare(0, k.size(), k) == 0 &&
                entry[k.size()] == '=')
                replaced = true;
        if (!replaced)
            env_strings.emplace_back(entry);
    }
    for (const auto &[k, v] : env)
        env_strings.push_back(k + "=" + v);
    std::vector<char *> envp, args;
    for (auto &s : env_strings)
        envp.push_back(s.data());
    envp.push_back(nullptr);
    std::vector<std::string> argv_copy(argv);
    for (auto &s : argv_copy)
        args.push_back(s.data());
    args.push_back(nullptr);

    const int in = input != nullptr ? input_fd(*input) : -1;
    // exec's outcome: closed on success (close-on-exec), errno on failure.
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) {
        const int err = errno;
        if (in >= 0)
            close(in);
        throw Failure(exit_status::internal, std::string("pipe2: ") + std::strerror(err));
    }
    struct sigaction default_action {};
    default_action.sa_handler = SIG_DFL;
    sigset_t empty;
    sigemptyset(&empty);
    const pid_t parent = getpid();
    pid_ = fork();
    if (pid_ == 0) {
        // A fresh signal state: lockctl ignores SIGPIPE and blocks the
        // signals it reads from a signalfd.
        for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE, SIGCHLD, SIGUSR1, SIGUSR2})
            sigaction(s, &default_action, nullptr);
        if (own_group)
            setpgid(0, 0);
        // Die with lockctl: a command that outlived it would run on after
        // its lease lapsed, beside the next holder (or the job's next worker).
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(exit_status::internal);  // lockctl died before the prctl
        if (in >= 0)
            dup2(in, STDIN_FILENO);
        sigprocmask(SIG_SETMASK, &empty, nullptr);
        execve(path.c_str(), args.data(), envp.data());
        const int err = errno;
        (void)!write(report[1], &err, sizeof(err));
        _exit(err == ENOENT ? exit_status::command_not_found : exit_status::cannot_execute);
    }
    const int fork_err = errno;
    close(report[1]);
    if (in >= 0)
        close(in);
    if (pid_ < 0) {
        close(report[0]);
        throw Failure(exit_status::internal, std::string("fork: ") + std::strerror(fork_err));
    }
    // Set the group from this side too, so a signal to -pid cannot miss the
    // child before its own setpgid (EACCES once it has exec'd: already set).
    if (own_group)
        setpgid(pid_, pid_);
    int exec_err = 0;
    ssize_t n;
    do {
        n = read(report[0], &exec_err, sizeof(exec_err));
    } while (n < 0 && errno == EINTR);
    close(report[0]);
    if (n == static_cast<ssize_t>(sizeof(exec_err))) {
        (void)reap();
        throw Failure(
            exec_err == ENOENT ? exit_status::command_not_found : exit_status::cannot_execute,
            "cannot run '" + argv[0] + "': " + std::strerror(exec_err));
    }
    pidfd_ = static_cast<int>(syscall(SYS_pidfd_open, pid_, 0));
    if (pidfd_ < 0) {
        const int err = errno;
        kill(pid_, SIGKILL);
        (void)reap();
        throw Failure(exit_status::internal, std::string("pidfd_open: ") + std::strerror(err));
    }
}

// Kill and reap a child still running (only on error paths: callers reap).
Child::~Child() {
    if (!reaped_ && pid_ > 0) {
        kill(own_group_ ? -pid_ : pid_, SIGKILL);
        (void)reap();
    }
    if (pidfd_ >= 0)
        close(pidfd_);
}

// Wait up to timeout for the exit.
bool Child::wait_for(std::chrono::milliseconds timeout) {
    if (reaped_)
        return true;
    pollfd p{pidfd_, POLLIN, 0};
    int rc;
    do {
        rc = poll(&p, 1, static_cast<int>(timeout.count()));
    } while (rc < 0 && errno == EINTR);
    return rc > 0;
}

// Reap and translate the wait status.
int Child::reap() {
    if (reaped_)
        return status_;
    int ws = 0;
    pid_t r;
    do {
        r = waitpid(pid_, &ws, 0);
    } while (r < 0 && errno == EINTR);
    reaped_ = true;
    if (r < 0)
        status_ = exit_status::internal;
    else if (WIFEXITED(ws))
        status_ = WEXITSTATUS(ws);
    else if (WIFSIGNALED(ws))
        status_ = 128 + WTERMSIG(ws);
    else
        status_ = exit_status::internal;
    return status_;
}

// Signal the child unless it has been reaped (its pid may be reused then).
void Child::signal(int signal) {
    if (!reaped_)
        kill(own_group_ ? -pid_ : pid_, signal);
}

// See child_process.hpp. Right after the reap, the group's id cannot have
// been reused: the kernel hands out no pid equal to a live group's id, and
// an empty group just gives ESRCH.
void Child::kill_leftovers() {
    if (own_group_ && pid_ > 0)
        kill(-pid_, SIGKILL);
}

// See child_process.hpp.
bool in_terminal_foreground() {
    return isatty(STDIN_FILENO) == 1 && tcgetpgrp(STDIN_FILENO) == getpgrp();
}

// SIGTERM, grace, SIGKILL (to the whole group, leftovers included).
int Child::terminate(std::chrono::milliseconds grace) {
    signal(SIGTERM);
    if (!wait_for(grace))
        signal(SIGKILL);
    const int status = reap();
    kill_leftovers();
    return status;
}

}  // namespace lockctl
