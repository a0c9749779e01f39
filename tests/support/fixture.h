// SPDX-License-Identifier: MIT
// Test fixture: a real OpenSSH sshd on 127.0.0.1 and real local TCP services.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace pytun::test {

/// Print why and exit 77 (meson reports the test as skipped).
[[noreturn]] void skip(const std::string &why);

/// Wait for a condition with a deadline, polling every few milliseconds.
bool wait_until(const std::function<bool()> &condition, std::chrono::milliseconds deadline);

/// A throwaway OpenSSH server: its own directory (removed on destruction) with
/// sshd_config, ed25519 + ecdsa host keys, user keys, authorized_keys and
/// known_hosts files in every form users have. Listens on 127.0.0.1 on a free
/// port; the process is stopped by PID. Skips the test (77) when sshd or
/// ssh-keygen are not installed.
class SshServer {
public:
    SshServer();
    ~SshServer();
    SshServer(const SshServer &) = delete;
    SshServer &operator=(const SshServer &) = delete;

    void start();       ///< (re)start on the same port; returns once it accepts TCP
    void stop();        ///< SIGTERM by PID, waitpid
    void kill_hard();   ///< SIGKILL by PID, waitpid (simulates a crash)
    bool running() const;
    pid_t pid() const;

    std::uint16_t port() const;
    const std::string &dir() const;
    std::string user() const;          ///< the user sshd lets in (the current user)
    std::string log() const;           ///< sshd's log so far

    // User keys (private key paths; the .pub file sits next to each).
    std::string key_ed25519() const;     ///< authorized
    std::string key_ecdsa() const;       ///< authorized
    std::string key_rsa() const;         ///< 2048 bits, authorized (pytun signs it with rsa-sha2-512)
    std::string key_encrypted() const;   ///< ed25519, authorized, passphrase k_passphrase
    std::string key_unauthorized() const;///< ed25519, not in authorized_keys
    static constexpr const char *k_passphrase = "pytun-test-passphrase";

    // known_hosts files.
    std::string known_hosts_bracketed() const; ///< "[127.0.0.1]:PORT type key" for both host keys
    std::string known_hosts_plain() const;     ///< "127.0.0.1 type key"
    std::string known_hosts_hashed() const;    ///< "|1|salt|hash type key"
    std::string known_hosts_changed() const;   ///< the same host with other keys of the same types
    std::string known_hosts_unknown() const;   ///< only entries for another host
    std::string known_hosts_messy() const;     ///< garbage and @revoked/@cert-authority lines before the valid entry
    std::string host_key_fingerprint_ed25519() const; ///< "SHA256:..." as ssh-keygen -l prints it
    std::string host_key_fingerprint_ecdsa() const;

    /// Put lines first in sshd_config (e.g. "RekeyLimit 4M") and restart sshd.
    void configure(const std::string &sshd_config_line);

    /// Append a line to authorized_keys (e.g. one with restrictions).
    void authorize(const std::string &authorized_keys_line);

    /// Start `ssh -N -R 127.0.0.1:remote_port:127.0.0.1:target_port` with the
    /// ed25519 key; returns once the server listens on remote_port. Used to
    /// hold a bastion port from "another session". Stop it with end_process().
    pid_t hold_remote_port(std::uint16_t remote_port, std::uint16_t target_port = 9);

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

/// A real proxy on 127.0.0.1 (tests/support/proxy_fixture.py): tinyproxy
/// for HTTP CONNECT, microsocks for SOCKS5, each with its own files in a
/// temporary directory. With a user it asks for the user and password; with
/// `bind` it connects onward from that loopback address (so sshd's log shows
/// which connections it carried). Stopped by PID. Skips the test (77) when
/// the program is not installed.
class ProxyServer {
public:
    enum class Kind { http, socks5 };
    explicit ProxyServer(Kind kind, std::string user = {}, std::string password = {}, std::string bind = {});
    ~ProxyServer();
    ProxyServer(const ProxyServer &) = delete;
    ProxyServer &operator=(const ProxyServer &) = delete;

    std::uint16_t port() const;
    /// "http://user:password@127.0.0.1:PORT" (socks5:// for SOCKS5).
    std::string url() const;
    std::string log() const;  ///< what the proxy logged so far
    void stop();              ///< SIGTERM by PID, reaped

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

/// A port of 127.0.0.1 that was free a moment ago.
std::uint16_t free_port();

/// SIGTERM then, after a short wait, SIGKILL a process we started; reaps it.
void end_process(pid_t pid);

/// Start `argv` (no shell; argv[0] looked up in PATH) with stdin from
/// /dev/null and stdout + stderr appended to `output_path`; only fds 0-2 are
/// inherited. Throws std::runtime_error if it cannot start.
pid_t spawn_process(const std::vector<std::string> &argv, const std::string &output_path);
/// spawn_process, then wait: the exit status, or -1 if it died of a signal.
int run_process(const std::vector<std::string> &argv, const std::string &output_path);

/// Local services on 127.0.0.1, port chosen by the kernel, one thread per
/// connection. stop() closes the listener and every connection; start()
/// listens again on the same port.
class TcpService {
public:
    virtual ~TcpService();
    std::uint16_t port() const;
    void start();
    void stop();
    std::size_t accepted() const;   ///< connections accepted so far

protected:
    TcpService();
    /// Serve one connection on a blocking socket; the base closes it afterwards.
    virtual void serve(int fd) = 0;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

/// Echoes every byte back; on EOF from the client it shuts down its write side.
class EchoService final : public TcpService {
public:
    EchoService();
    ~EchoService() override;
protected:
    void serve(int fd) override;
};

/// Reads until EOF and records the byte count and SHA-256 of each connection.
class SinkService final : public TcpService {
public:
    struct Received { std::size_t bytes; std::string sha256; };
    SinkService();
    ~SinkService() override;
    std::vector<Received> received() const; ///< completed connections, in completion order
protected:
    void serve(int fd) override;
private:
    struct State;
    std::unique_ptr<State> state_;
};

/// Sends `bytes` pseudo-random bytes (seeded per connection), then closes.
class SourceService final : public TcpService {
public:
    explicit SourceService(std::size_t bytes);
    ~SourceService() override;
    std::vector<std::string> sent_sha256() const; ///< SHA-256 of what each finished connection sent
protected:
    void serve(int fd) override;
private:
    struct State;
    std::unique_ptr<State> state_;
};

/// Reads the request until EOF (the client's half-close), then answers
/// "received N bytes sha256=HEX\n" followed by `answer_bytes` bytes of 'A', and closes.
class HalfCloseService final : public TcpService {
public:
    explicit HalfCloseService(std::size_t answer_bytes = 100000);
    ~HalfCloseService() override;
protected:
    void serve(int fd) override;
private:
    std::size_t answer_bytes_;
};

// --- client helpers ----------------------------------------------------------

/// Blocking TCP connect to 127.0.0.1:port with a timeout; -1 on failure.
int connect_tcp(std::uint16_t port, std::chrono::milliseconds timeout = std::chrono::seconds(5));
std::string sha256_hex(const void *data, std::size_t size);
std::vector<std::uint8_t> random_bytes(std::size_t size, std::uint64_t seed);
bool send_all(int fd, const void *data, std::size_t size);
/// Read until EOF (or error/timeout); returns what arrived.
std::vector<std::uint8_t> read_until_eof(int fd, std::chrono::milliseconds timeout = std::chrono::seconds(60));

/// `connections` clients at once to 127.0.0.1:port (an echo service behind it),
/// each sending `bytes_each` random bytes while reading the echo at the same
/// time (one poll() loop), then half-closing; a connection is ok when exactly
/// the bytes it sent came back followed by EOF.
struct EchoLoadResult {
    std::size_t ok = 0;
    std::size_t failed = 0;
    std::vector<std::string> errors; ///< first few failures, for the report
    std::chrono::milliseconds elapsed{0};
};
EchoLoadResult run_echo_load(std::uint16_t port, std::size_t connections, std::size_t bytes_each,
                             std::chrono::seconds deadline = std::chrono::seconds(120));

std::size_t count_open_fds();  ///< entries in /proc/self/fd
std::size_t count_threads();   ///< entries in /proc/self/task
bool tcp_port_accepts(std::uint16_t port); ///< a connect to 127.0.0.1:port succeeds

} // namespace pytun::test
