// lockctl: blocked signals read from a signalfd.
#include "signals.hpp"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "cli.hpp"

namespace lockctl {

// Block the handled signals and open the signalfd.
HandledSignals::HandledSignals() {
    sigset_t set;
    sigemptyset(&set);
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT})
        sigaddset(&set, s);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    fd_ = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (fd_ < 0)
        throw Failure(exit_status::internal, std::string("signalfd: ") + std::strerror(errno));
}

// Close the signalfd (the mask stays: lockctl is exiting).
HandledSignals::~HandledSignals() {
    close(fd_);
}

// Read one pending signal.
std::optional<signalfd_siginfo> HandledSignals::take() {
    signalfd_siginfo info;
    ssize_t n;
    do {
        n = read(fd_, &info, sizeof(info));
    } while (n < 0 && errno == EINTR);
    if (n != static_cast<ssize_t>(sizeof(info)))
        return std::nullopt;
    return info;
}

// SI_USER (kill), SI_QUEUE (sigqueue) and SI_TKILL come from a process;
// SI_KERNEL (terminal keys, hangup) from the kernel.
bool HandledSignals::sent_by_process(const signalfd_siginfo &info) {
    const int code = info.ssi_code;
    return code == SI_USER || code == SI_QUEUE || code == SI_TKILL;
}

}  // namespace lockctl
