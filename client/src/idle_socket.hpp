// The health check both connection pools run on an idle connection before
// handing it out again.
#pragma once

#include <poll.h>

#include <cerrno>

namespace lockext::detail {

// Whether an idle connection's socket has nothing to read: no EOF, reset or
// stray reply is pending, so the connection may still be used.
inline bool idle_socket_is_quiet(int fd) noexcept {
    pollfd p{};
    p.fd = fd;
    p.events = POLLIN;
    int r;
    do {
        r = ::poll(&p, 1, 0);
    } while (r < 0 && errno == EINTR);
    return r == 0;
}

}  // namespace lockext::detail
