// lockctl: the signals lockctl handles, taken through a signalfd.
#pragma once

#include <sys/signalfd.h>

#include <optional>

namespace lockctl {

// Blocks SIGINT, SIGTERM, SIGHUP and SIGQUIT in the calling thread (create it
// first in main, before any thread starts, so every thread inherits the mask)
// and delivers them through fd(). Children get a fresh mask (Child).
class HandledSignals {
  public:
    HandledSignals();
    ~HandledSignals();
    HandledSignals(const HandledSignals &) = delete;
    HandledSignals &operator=(const HandledSignals &) = delete;

    // Readable when a handled signal is pending.
    int fd() const {
        return fd_;
    }
    // The pending signal, if any (does not block).
    std::optional<signalfd_siginfo> take();

    // Whether `info` was sent by a process (kill, lockctl's parent, a
    // supervisor) rather than by the terminal: a terminal's Ctrl-C already
    // reached every process of the foreground group, the child included.
    static bool sent_by_process(const signalfd_siginfo &info);

  private:
    int fd_ = -1;
};

}  // namespace lockctl
