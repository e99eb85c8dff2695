// lockctl: child processes via posix_spawnp, waited for through a pidfd.
#include "child_process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
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

}  // namespace

// Spawn the child; see child_process.hpp.
Child::Child(const std::vector<std::string> &argv,
             const std::vector<std::pair<std::string, std::string>> &env, const std::string *input,
             bool own_group)
    : own_group_(own_group) {
    if (argv.empty())
        throw usage_error("no command given after --");
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

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    int in = -1;
    if (input != nullptr) {
        in = input_fd(*input);
        posix_spawn_file_actions_adddup2(&actions, in, STDIN_FILENO);
    }
    // A fresh signal state: lockctl blocks the signals it handles itself.
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t empty, defaults;
    sigemptyset(&empty);
    sigemptyset(&defaults);
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE, SIGCHLD, SIGUSR1, SIGUSR2})
        sigaddset(&defaults, s);
    posix_spawnattr_setsigmask(&attr, &empty);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
    if (own_group) {
        posix_spawnattr_setpgroup(&attr, 0);  // a new group, led by the child
        flags |= POSIX_SPAWN_SETPGROUP;
    }
    posix_spawnattr_setflags(&attr, flags);
    const int rc = posix_spawnp(&pid_, args[0], &actions, &attr, args.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    if (in >= 0)
        close(in);
    if (rc != 0)
        throw Failure(rc == ENOENT ? exit_status::command_not_found : exit_status::cannot_execute,
                      "cannot run '" + argv[0] + "': " + std::strerror(rc));
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
