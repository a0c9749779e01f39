// SPDX-License-Identifier: MIT
// Helpers of the inspection API tests: raw HTTP over a socket (for requests
// no well-behaved client would send), unzip, a strict Prometheus line check.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <regex>
#include <stdexcept>
#include <string>

#include <zip.h>

namespace pytun::test::http {

/// A reply as it came off the wire.
struct RawReply {
    int status = 0;          ///< 0: no status line arrived
    std::string head;
    std::string body;
    bool closed = false;     ///< the server closed the connection
};

inline int connect_to(const std::string &address, std::uint16_t port)
{
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    ::inet_pton(AF_INET, address.c_str(), &addr.sin_addr);
    if (::connect(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0) {
        ::close(fd);
        return -1;
    }
    return fd;
}

/// Read until the server closes or `timeout` passes.
inline RawReply read_reply(int fd, std::chrono::milliseconds timeout)
{
    RawReply r;
    std::string data;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0)
            break;
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(left.count())) <= 0)
            break;
        char buf[65536];
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) {
            r.closed = true;
            break;
        }
        data.append(buf, static_cast<std::size_t>(n));
    }
    auto end = data.find("\r\n\r\n");
    r.head = data.substr(0, end);
    if (end != std::string::npos)
        r.body = data.substr(end + 4);
    if (data.rfind("HTTP/1.", 0) == 0 && data.size() >= 12)
        r.status = std::stoi(data.substr(9, 3));
    return r;
}

/// Send `request` as is and read the reply.
inline RawReply raw(std::uint16_t port, const std::string &request,
                    std::chrono::milliseconds timeout = std::chrono::seconds(10),
                    const std::string &address = "127.0.0.1")
{
    int fd = connect_to(address, port);
    if (fd < 0)
        return {};
    std::size_t done = 0;
    while (done < request.size()) {
        ssize_t n = ::send(fd, request.data() + done, request.size() - done, MSG_NOSIGNAL);
        if (n <= 0)
            break;
        done += static_cast<std::size_t>(n);
    }
    RawReply r = read_reply(fd, timeout);
    ::close(fd);
    return r;
}

inline std::string header_value(const std::string &head, const std::string &name)
{
    std::regex re("\r\n" + name + ": ([^\r\n]*)", std::regex::icase);
    std::smatch m;
    return std::regex_search(head, m, re) ? m[1].str() : std::string();
}

/// Every entry of a zip archive held in memory, by name.
inline std::map<std::string, std::string> unzip(const std::string &data)
{
    zip_error_t error;
    zip_error_init(&error);
    zip_source_t *source = zip_source_buffer_create(data.data(), data.size(), 0, &error);
    if (!source)
        throw std::runtime_error("zip_source_buffer_create failed");
    zip_t *archive = zip_open_from_source(source, ZIP_RDONLY | ZIP_CHECKCONS, &error);
    if (!archive) {
        zip_source_free(source);
        std::string what = zip_error_strerror(&error);
        zip_error_fini(&error);
        throw std::runtime_error("not a zip archive: " + what);
    }
    std::map<std::string, std::string> out;
    const zip_int64_t count = zip_get_num_entries(archive, 0);
    for (zip_int64_t i = 0; i < count; ++i) {
        zip_stat_t st;
        zip_stat_index(archive, static_cast<zip_uint64_t>(i), 0, &st);
        zip_file_t *file = zip_fopen_index(archive, static_cast<zip_uint64_t>(i), 0);
        std::string content(static_cast<std::size_t>(st.size), '\0');
        if (file) {
            zip_fread(file, content.data(), content.size());
            zip_fclose(file);
        }
        out[st.name] = std::move(content);
    }
    zip_close(archive);
    return out;
}

/// The strict check of the Prometheus text format (0.0.4): every line is a
/// HELP/TYPE comment or `name{label="value",...} number`. Returns the first
/// offending line, or empty.
inline std::string bad_metrics_line(const std::string &text)
{
    static const std::regex comment(R"(# (HELP [a-zA-Z_:][a-zA-Z0-9_:]* .*|TYPE [a-zA-Z_:][a-zA-Z0-9_:]* (counter|gauge|histogram|summary|untyped)))");
    static const std::regex sample(
        R"([a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"(,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")*\})? (-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?|NaN|[+-]Inf))");
    std::size_t start = 0;
    if (text.empty() || text.back() != '\n')
        return "(no final newline)";
    while (start < text.size()) {
        auto end = text.find('\n', start);
        std::string line = text.substr(start, end - start);
        start = end + 1;
        if (!std::regex_match(line, comment) && !std::regex_match(line, sample))
            return line.empty() ? "(empty line)" : line;
    }
    return {};
}

/// The value of the sample `name{labels}` (labels as written), or -1.
inline double metric(const std::string &text, const std::string &series)
{
    auto pos = text.find("\n" + series + " ");
    if (pos == std::string::npos)
        return -1;
    pos += series.size() + 2;
    return std::stod(text.substr(pos, text.find('\n', pos) - pos));
}

} // namespace pytun::test::http
