// lockctl: start a command as a child process and wait for it without polling.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <string>
#include <utility>
#include <vector>

namespace lockctl {

// A running child: its pid and a pidfd that becomes readable when it exits.
class Child {
  public:
    // Start argv[0] (searched in PATH) with `env` added to this process's
    // environment, `input` on its stdin (nullptr: inherit stdin), and the
    // signal mask and dispositions a fresh process expects. Throws Failure
    // 127 (not found) or 126 (cannot execute).
    // With own_group the child leads a new process group, and signal() and
    // the destructor reach everything it started (a lost lease must stop
    // the command's own children too); without it the child stays in
    // lockctl's group, so a terminal's job control (Ctrl-C, Ctrl-Z) keeps
    // working for an interactive command.
    // The child gets SIGKILL when the thread that started it ends, as when
    // lockctl is killed: its lease is renewed by nothing after that. (Only
    // the child: what it started in its group is out of the kernel's reach,
    // and the kernel drops the death signal when the child execs a setuid
    // or file-capability program, such as sudo.)
    Child(const std::vector<std::string> &argv,
          const std::vector<std::pair<std::string, std::string>> &env, const std::string *input,
          bool own_group);
    ~Child();
    Child(const Child &) = delete;
    Child &operator=(const Child &) = delete;

    pid_t pid() const {
        return pid_;
    }
    // Readable (POLLIN) once the child has exited.
    int exit_fd() const {
        return pidfd_;
    }
    // Whether reap() has run (the pid is no longer ours to signal).
    bool reaped() const {
        return reaped_;
    }
    // Wait up to `timeout` for the child to exit; true if it has.
    bool wait_for(std::chrono::milliseconds timeout);
    // Reap the exited child: its exit status, or 128 + N when signal N killed it.
    int reap();
    // Send `signal` to the child if it still runs (to its process group
    // when it has its own).
    void signal(int signal);
    // SIGKILL whatever is left of the child's own process group after the
    // child itself exited (its children, on a lost lease).
    void kill_leftovers();
    // SIGTERM, then SIGKILL after `grace`; reaps it and returns its status.
    int terminate(std::chrono::milliseconds grace);

  private:
    pid_t pid_ = -1;
    int pidfd_ = -1;
    bool reaped_ = false;
    bool own_group_ = false;
    int status_ = 0;
};

// Whether lockctl runs in the foreground of a terminal on stdin, where a
// command must stay in lockctl's process group for job control to work.
bool in_terminal_foreground();

}  // namespace lockctl
