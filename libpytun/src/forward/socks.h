// SPDX-License-Identifier: MIT
// The SOCKS protocol as pure, incremental handshakes (bytes in, decisions
// out; no sockets): the proxy's side of SOCKS5 (RFC 1928, RFC 1929 user name
// and password), SOCKS4 and SOCKS4a for the SOCKS forwards, and the client's
// side of SOCKS5 for reaching a bastion through a SOCKS5 proxy. Only CONNECT
// is served; BIND and UDP ASSOCIATE are answered "command not supported".
//
// Use: feed whatever bytes arrived (any split, one byte at a time included)
// and act on the step returned. Whatever its kind, a step's `send` bytes go
// to the peer first. Buffering is bounded by the protocol's own message sizes:
// the largest legitimate SOCKS5 exchange is 1032 bytes, between feeds at most
// one incomplete message is held (520 bytes at most), and a SOCKS4 user id or
// host name must end within 255 bytes.
// tests/fuzz/fuzz_socks.cpp fuzzes both sides.
#pragma once

#include "internal.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace pytun::detail {

/// SOCKS5 reply codes (RFC 1928 §6). SOCKS4 knows only "granted" (0x5A) and
/// "rejected" (0x5B): `succeeded` is sent as granted, any other as rejected.
enum class SocksReply : std::uint8_t {
    succeeded = 0x00,
    general_failure = 0x01,
    not_allowed = 0x02,
    network_unreachable = 0x03,
    host_unreachable = 0x04,
    connection_refused = 0x05,
    ttl_expired = 0x06,
    command_not_supported = 0x07,
    address_type_not_supported = 0x08,
};

/// "connection refused" etc., for logs; "unknown reply" for other values.
const char *socks_reply_text(SocksReply reply);

/// RFC 1929 user name and password.
struct SocksCredentials {
    std::string user;
    std::string password;
};

/// What to do after feeding bytes. Whatever the kind, write `send` first.
struct SocksStep {
    enum class Kind : std::uint8_t {
        need_more,         ///< nothing to answer yet: read and feed more
        send_and_continue, ///< write `send` (method selection, auth status, next request), then read and feed more
        complete,          ///< server: the CONNECT request is complete; client: the proxy connected
        failed,            ///< write `send` (the protocol's refusal, if it has one), then close
    };
    Kind kind = Kind::need_more;
    std::string send;
    std::string reason; ///< failed: why, for the log (peer bytes escaped, never a password)
};

/// A complete CONNECT request, as the client sent it.
struct SocksRequest {
    enum class AddressType : std::uint8_t { ipv4, ipv6, domain };
    int version = 5; ///< 4 (SOCKS4 and SOCKS4a) or 5
    AddressType address_type = AddressType::ipv4;
    std::string host; ///< "10.0.0.1", "fd00::1", or the domain name as sent (SOCKS5 DOMAINNAME, SOCKS4a)
    std::uint16_t port = 0;
    std::string user; ///< SOCKS4 user id or the RFC 1929 user name; empty if none
};

/// What both sides share: bytes are held until a message is complete, and
/// after the end they are early data (complete) or ignored (failed).
class SocksHandshake {
public:
    virtual ~SocksHandshake() = default;
    SocksHandshake(const SocksHandshake &) = delete;
    SocksHandshake &operator=(const SocksHandshake &) = delete;

    /// Takes the peer's next bytes. After `complete`, bytes fed are added to
    /// the early data; after `failed`, the same failure is returned.
    SocksStep feed(std::string_view bytes);
    /// Bytes the peer sent after the handshake, to be passed on before
    /// anything else; empties them.
    std::string take_early_data() { return std::exchange(early_, {}); }

protected:
    /// `pipelining`: whether the peer may send its next message before it has
    /// read our answer (a SOCKS client may; a proxy answering us may not).
    explicit SocksHandshake(bool pipelining) : pipelining_(pipelining) {}
    /// Parses the message at the front of `in`, appending any answer to
    /// `send`: the bytes it used, or nothing while it is incomplete and
    /// after complete() or fail().
    virtual std::optional<std::size_t> parse(std::string_view in, std::string &send) = 0;
    /// The handshake is complete after this message of `size` bytes.
    std::size_t complete(std::size_t size);
    std::nullopt_t fail(std::string reason);
    bool failed() const { return end_ == End::failed; }

private:
    enum class End : std::uint8_t { open, complete, failed };
    bool pipelining_;
    End end_ = End::open;
    std::string buffer_; ///< the start of a message not yet complete
    std::string early_;
    std::string reason_;
};

/// The proxy's side of one client connection.
class SocksServerHandshake : public SocksHandshake {
public:
    /// Without credentials only "no authentication" (0x00) is accepted; with
    /// them only RFC 1929 (0x02) with exactly these, and SOCKS4, which cannot
    /// authenticate, is refused.
    explicit SocksServerHandshake(std::optional<SocksCredentials> credentials = std::nullopt);

    /// The request; valid once feed() returned `complete`.
    const SocksRequest &request() const { return request_; }
    /// The answer to the request, in its own version: SOCKS5 with BND
    /// 0.0.0.0:0, SOCKS4 0x5A / 0x5B. Write it, then relay (succeeded) or close.
    std::string reply(SocksReply reply) const;

private:
    enum class Phase : std::uint8_t { version, greeting, auth, request5, request4 };
    std::optional<std::size_t> parse(std::string_view in, std::string &send) override;
    std::optional<std::size_t> parse_greeting(std::string_view in, std::string &send);
    std::optional<std::size_t> parse_auth(std::string_view in, std::string &send);
    std::optional<std::size_t> parse_request5(std::string_view in, std::string &send);
    std::optional<std::size_t> parse_request4(std::string_view in, std::string &send);
    /// Fails with the protocol's refusal `reply` for the client.
    std::nullopt_t refuse(std::string &send, const std::string &reply, std::string reason);

    std::optional<SocksCredentials> credentials_;
    Phase phase_ = Phase::version;
    SocksRequest request_;
};

/// The client's side of SOCKS5 CONNECT through a proxy to `host`:`port`
/// (an IP literal without brackets, or a host name the proxy resolves).
class Socks5ClientHandshake : public SocksHandshake {
public:
    /// With credentials the greeting offers RFC 1929 as well as no authentication.
    Socks5ClientHandshake(std::string host, std::uint16_t port,
                          std::optional<SocksCredentials> credentials = std::nullopt);

    /// The greeting to write first (`send_and_continue`), or `failed` when
    /// the host or credentials cannot be sent (too long, empty, control
    /// characters). Then feed() the proxy's answers: `send_and_continue`
    /// with the auth or CONNECT request, `complete` once the proxy connected.
    SocksStep start();
    /// The proxy's reply code to CONNECT, once it answered.
    std::optional<SocksReply> proxy_reply() const { return proxy_reply_; }
    /// The proxy turned down our credentials, or wants some we did not give.
    bool credentials_refused() const { return credentials_refused_; }

private:
    enum class Phase : std::uint8_t { start, method, auth, connect };
    std::optional<std::size_t> parse(std::string_view in, std::string &send) override;
    std::string connect_request() const;

    std::string host_;
    std::uint16_t port_;
    std::optional<SocksCredentials> credentials_;
    Phase phase_ = Phase::start;
    std::optional<SocksReply> proxy_reply_;
    bool credentials_refused_ = false;
};

} // namespace pytun::detail
