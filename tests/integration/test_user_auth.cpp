// SPDX-License-Identifier: MIT
// RSA user keys against a real OpenSSH sshd: keys made as the original
// connector's README says (ssh-keygen -t rsa -b 4096) log in with
// rsa-sha2-512 on a default sshd; a server that takes only ssh-rsa still lets
// them in (said in the log, and reconnects offer ssh-rsa first); a server that
// hangs up after refusals (MaxAuthTries) is reconnected with ssh-rsa first.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

#include <pytun/error.h>
#include <pytun/tunnel.h>

#include "fixture.h"
#include "log_capture.h"
#include "tunnel_options.h"

using pytun::Errc;
namespace t = pytun::test;

namespace {

std::string read_file(const std::string &path)
{
    std::ifstream in(path);
    std::ostringstream out;
    out << in.rdbuf();
    return out.str();
}

std::size_t count(const std::string &text, const std::string &needle)
{
    std::size_t n = 0;
    for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1))
        ++n;
    return n;
}

/// `ssh-keygen -t rsa -b 4096` plus `extra` arguments, in the server's
/// directory; the public key is authorized unless told otherwise.
std::string make_rsa_key(t::SshServer &server, const std::string &name, std::vector<std::string> extra = {},
                         bool authorize = true)
{
    const std::string path = server.dir() + "/" + name;
    std::vector<std::string> argv = {"ssh-keygen", "-q", "-t", "rsa", "-b", "4096", "-N", "", "-C", name, "-f", path};
    argv.insert(argv.end(), extra.begin(), extra.end());
    if (t::run_process(argv, server.dir() + "/keygen.log") != 0)
        throw std::runtime_error("ssh-keygen failed: " + read_file(server.dir() + "/keygen.log"));
    if (authorize)
        server.authorize(read_file(path + ".pub"));
    return path;
}

/// Start a tunnel with `key` and check that it serves (one echo through it).
std::error_code start_with(t::SshServer &server, const std::string &key, std::string &message)
{
    t::EchoService echo;
    auto o = t::tunnel_options(server, echo.port());
    o.key_file = key;
    pytun::Tunnel tunnel(o);
    const std::error_code ec = tunnel.start();
    message = tunnel.last_error_message();
    if (!ec) {
        const int fd = t::connect_tcp(tunnel.listen_port());
        REQUIRE(fd >= 0);
        REQUIRE(t::send_all(fd, "ping", 4));
        ::shutdown(fd, SHUT_WR);
        const auto back = t::read_until_eof(fd, std::chrono::seconds(10));
        ::close(fd);
        CHECK(std::string(back.begin(), back.end()) == "ping");
    }
    return ec;
}

// "debug3: mm_answer_keyverify: publickey RSA signature using rsa-sha2-512
// verified" is how sshd says which signature it checked (LogLevel DEBUG3).
const std::string k_verified_sha512 = "RSA signature using rsa-sha2-512 verified";
const std::string k_verified_sha1 = "RSA signature using ssh-rsa verified";

} // namespace

TEST_CASE("RSA 4096 keys from ssh-keygen, OpenSSH and PEM format, log in with rsa-sha2-512 on a default sshd")
{
    t::SshServer server;
    server.configure("LogLevel DEBUG3");
    t::LogCapture log;
    const std::string openssh = make_rsa_key(server, "rsa4096");
    const std::string pem = make_rsa_key(server, "rsa4096_pem", {"-m", "PEM"});
    REQUIRE(read_file(openssh).find("BEGIN OPENSSH PRIVATE KEY") != std::string::npos);
    REQUIRE(read_file(pem).find("BEGIN RSA PRIVATE KEY") != std::string::npos);

    for (const auto &key : {openssh, pem}) {
        CAPTURE(key);
        const std::size_t verified_before = count(server.log(), k_verified_sha512);
        std::string message;
        CHECK(start_with(server, key, message) == std::error_code{});
        CHECK(message.empty());
        CHECK(t::wait_until([&] { return count(server.log(), k_verified_sha512) > verified_before; },
                            std::chrono::seconds(5)));
    }
    CHECK(count(server.log(), "pkalg ssh-rsa") == 0); // SHA-1 never offered
    CHECK(log.count_containing("accepted ssh-rsa") == 0);

    // The fixture's own 2048-bit key, ed25519 and ECDSA keep working as before.
    std::string message;
    CHECK(start_with(server, server.key_rsa(), message) == std::error_code{});
    CHECK(start_with(server, server.key_ed25519(), message) == std::error_code{});
    CHECK(start_with(server, server.key_ecdsa(), message) == std::error_code{});
}

TEST_CASE("a server that takes only ssh-rsa: SHA-2 refused, ssh-rsa accepted and logged; reconnects go to ssh-rsa")
{
    t::SshServer server;
    server.configure("PubkeyAcceptedAlgorithms ssh-rsa");
    server.configure("LogLevel DEBUG3");
    t::LogCapture log;
    const std::string key = make_rsa_key(server, "rsa4096");

    std::string message;
    CHECK(start_with(server, key, message) == std::error_code{});
    CHECK(t::wait_until([&] { return count(server.log(), k_verified_sha1) == 1; }, std::chrono::seconds(5)));
    // Both SHA-2 names were refused first, and the log says what happened.
    CHECK(count(server.log(), "signature algorithm rsa-sha2-512 not in PubkeyAcceptedAlgorithms") == 1);
    CHECK(count(server.log(), "signature algorithm rsa-sha2-256 not in PubkeyAcceptedAlgorithms") == 1);
    CHECK(log.count_containing("refused the RSA key " + key + " as rsa-sha2-512 and rsa-sha2-256 and accepted "
                               "ssh-rsa (SHA-1)") == 1);

    // The next login offers ssh-rsa first: no more refusals in the server's log.
    CHECK(start_with(server, key, message) == std::error_code{});
    CHECK(t::wait_until([&] { return count(server.log(), k_verified_sha1) == 2; }, std::chrono::seconds(5)));
    CHECK(count(server.log(), "signature algorithm rsa-sha2-512 not in PubkeyAcceptedAlgorithms") == 1);
}

TEST_CASE("a server that hangs up after two refusals (MaxAuthTries 2): the reconnect offers ssh-rsa first")
{
    t::SshServer server;
    server.configure("PubkeyAcceptedAlgorithms ssh-rsa");
    server.configure("MaxAuthTries 2");
    const std::string key = make_rsa_key(server, "rsa4096");

    std::string message;
    INFO(server.log());
    CHECK(start_with(server, key, message) == Errc::transport_lost);
    INFO(message);
    // sshd counts the refusal of rsa-sha2-512 and hangs up at rsa-sha2-256.
    CHECK(message.find("closed the connection during authentication after refusing the RSA key as rsa-sha2-512")
          != std::string::npos);
    CHECK(message.find("the next attempt offers ssh-rsa first") != std::string::npos);
    CHECK(start_with(server, key, message) == std::error_code{});
}

TEST_CASE("an RSA key the server does not know: not authorized, after each name once")
{
    t::SshServer server;
    const std::string key = make_rsa_key(server, "rsa4096_stranger", {}, false);
    std::string message;
    CHECK(start_with(server, key, message) == Errc::key_not_authorized);
    INFO(message);
    CHECK(message.find("offered as rsa-sha2-512, rsa-sha2-256 and ssh-rsa") != std::string::npos);
    CHECK(message.find("authorized_keys") != std::string::npos);
    CHECK(message.find(key + ".pub") != std::string::npos);
    // Refused three times, within the default MaxAuthTries (6).
    CHECK(count(server.log(), "Failed publickey") <= 3);
}
