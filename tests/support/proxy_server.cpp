// SPDX-License-Identifier: MIT
// ProxyServer: tinyproxy or microsocks on loopback, prepared by
// proxy_fixture.py, stopped by PID; and free_port().
#include "fixture.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#ifndef PYTUN_PROXY_FIXTURE
#error "PYTUN_PROXY_FIXTURE (path of proxy_fixture.py) must be defined by the build"
#endif

namespace pytun::test {

namespace {

std::string read_text(const std::string &path)
{
    std::ifstream in(path, std::ios::binary);
    std::ostringstream out;
    out << in.rdbuf();
    return out.str();
}

} // namespace

std::uint16_t free_port()
{
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    ::bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr);
    ::getsockname(fd, reinterpret_cast<sockaddr *>(&addr), &len);
    ::close(fd);
    return ntohs(addr.sin_port);
}

struct ProxyServer::Impl {
    std::string dir;
    std::string url;
    std::string log;
    std::uint16_t port = 0;
    pid_t pid = -1;
};

ProxyServer::ProxyServer(Kind kind, std::string user, std::string password, std::string bind)
    : impl_(std::make_unique<Impl>())
{
    std::string tmpl = (std::filesystem::temp_directory_path() / "pytun-proxy-XXXXXX").string();
    if (!::mkdtemp(tmpl.data()))
        throw std::runtime_error("mkdtemp failed");
    impl_->dir = tmpl;
    const std::string scheme = kind == Kind::http ? "http" : "socks5";
    std::vector<std::string> prepare = {"python3", PYTUN_PROXY_FIXTURE, "prepare", scheme, impl_->dir};
    if (!user.empty())
        prepare.insert(prepare.end(), {"--user", user, "--password", password});
    if (!bind.empty())
        prepare.insert(prepare.end(), {"--bind", bind});
    const std::string prepare_log = impl_->dir + "/prepare.log";
    const int rc = run_process(prepare, prepare_log);
    if (rc == 77)
        skip(read_text(prepare_log));
    if (rc != 0)
        throw std::runtime_error("proxy_fixture.py prepare failed: " + read_text(prepare_log));
    const auto info = nlohmann::json::parse(read_text(impl_->dir + "/proxy.json"));
    impl_->port = info.at("port").get<std::uint16_t>();
    impl_->log = info.at("log").get<std::string>();
    impl_->url = scheme + "://" + (user.empty() ? std::string() : user + ":" + password + "@") + "127.0.0.1:" +
                 std::to_string(impl_->port);
    impl_->pid = spawn_process(info.at("argv").get<std::vector<std::string>>(), impl_->log);
    if (!wait_until([this] { return tcp_port_accepts(impl_->port); }, std::chrono::seconds(10)))
        throw std::runtime_error(scheme + " proxy did not listen: " + read_text(impl_->log));
}

ProxyServer::~ProxyServer()
{
    stop();
    std::error_code ec;
    std::filesystem::remove_all(impl_->dir, ec);
}

std::uint16_t ProxyServer::port() const
{
    return impl_->port;
}

std::string ProxyServer::url() const
{
    return impl_->url;
}

std::string ProxyServer::log() const
{
    return read_text(impl_->log);
}

void ProxyServer::stop()
{
    end_process(impl_->pid);
    impl_->pid = -1;
}

} // namespace pytun::test
