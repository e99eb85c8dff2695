// lockctl: GET /metrics over plain HTTP/1.1, one connection at a time (a
// scraper asks every few seconds; nothing here needs more).
#include "metrics_server.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <iostream>

#include "cli.hpp"

namespace lockctl {

namespace {

// Write all of `data` to `fd` (best effort: a scraper that hangs up is its problem).
void write_all(int fd, const std::string &data) {
    std::size_t done = 0;
    while (done < data.size()) {
        ssize_t n = send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        done += static_cast<std::size_t>(n);
    }
}

// An HTTP response with `status` and `body`.
std::string response(const char *status, const std::string &type, const std::string &body) {
    return std::string("HTTP/1.1 ") + status + "\r\nContent-Type: " + type +
           "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" +
           body;
}

}  // namespace

// Bind and start serving; see metrics_server.hpp.
MetricsServer::MetricsServer(const std::string &listen, std::function<std::string()> body)
    : body_(std::move(body)) {
    const auto colon = listen.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == listen.size())
        throw usage_error("invalid --metrics-listen '" + listen + "': expected HOST:PORT");
    const std::string host = listen.substr(0, colon);
    const int port =
        static_cast<int>(parse_count(listen.substr(colon + 1), "--metrics-listen port", 0, 65535));
    addrinfo hints{};
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo *found = nullptr;
    if (getaddrinfo(host.c_str(), nullptr, &hints, &found) != 0 || found == nullptr)
        throw usage_error("invalid --metrics-listen '" + listen + "': unknown host '" + host + "'");
    sockaddr_in addr = *reinterpret_cast<sockaddr_in *>(found->ai_addr);
    freeaddrinfo(found);
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (listen_fd_ < 0 ||
        bind(listen_fd_, reinterpret_cast<sockaddr *>(&addr), sizeof(addr)) != 0 ||
        ::listen(listen_fd_, 16) != 0) {
        const std::string why = std::strerror(errno);
        if (listen_fd_ >= 0)
            close(listen_fd_);
        throw Failure(exit_status::unavailable, "cannot listen on " + listen + ": " + why);
    }
    socklen_t len = sizeof(addr);
    getsockname(listen_fd_, reinterpret_cast<sockaddr *>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    if (port == 0)
        std::cerr << "lockctl: serving metrics on http://" << host << ":" << port_ << "/metrics\n";
    stop_fd_ = eventfd(0, EFD_CLOEXEC);
    thread_ = std::thread([this] { serve(); });
}

// Stop the thread and close the sockets.
MetricsServer::~MetricsServer() {
    const std::uint64_t one = 1;
    if (write(stop_fd_, &one, sizeof(one)) < 0) {
        // Nothing to do: the thread then ends with the process.
    }
    if (thread_.joinable())
        thread_.join();
    close(stop_fd_);
    close(listen_fd_);
}

// Accept loop.
void MetricsServer::serve() {
    for (;;) {
        pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        if (fds[1].revents != 0)
            return;
        int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        answer(fd);
        close(fd);
    }
}

// Read the request head (2 s at most) and answer GET /metrics.
void MetricsServer::answer(int fd) {
    std::string request;
    char buf[1024];
    while (request.find("\r\n\r\n") == std::string::npos && request.size() < 8192) {
        pollfd p{fd, POLLIN, 0};
        if (poll(&p, 1, 2000) <= 0)
            return;
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n <= 0)
            return;
        request.append(buf, static_cast<std::size_t>(n));
    }
    const auto line_end = request.find("\r\n");
    const std::string line = request.substr(0, line_end);
    if (line.rfind("GET /metrics ", 0) == 0 || line.rfind("GET /metrics?", 0) == 0) {
        std::string body;
        try {
            body = body_();
        } catch (const std::exception &e) {
            write_all(fd, response("500 Internal Server Error", "text/plain", e.what()));
            return;
        }
        write_all(fd, response("200 OK", "text/plain; version=0.0.4; charset=utf-8", body));
    } else {
        write_all(fd, response("404 Not Found", "text/plain", "lockctl serves /metrics only\n"));
    }
}

}  // namespace lockctl
