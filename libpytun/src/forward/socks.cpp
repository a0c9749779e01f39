// SPDX-License-Identifier: MIT
// SOCKS4/4a/5 handshakes, server and client side (RFC 1928, RFC 1929, the
// SOCKS4 and SOCKS4a protocol notes), as incremental parsers.
#include "forward/socks.h"

#include <algorithm>
#include <utility>

#include "forward/destination.h"
#include "util/text.h"

namespace pytun::detail {
namespace {

constexpr std::uint8_t k_v5 = 0x05;
constexpr std::uint8_t k_v4 = 0x04;
constexpr std::uint8_t k_auth_version = 0x01; // RFC 1929 subnegotiation
constexpr std::uint8_t k_method_none = 0x00;
constexpr std::uint8_t k_method_password = 0x02;
constexpr std::uint8_t k_no_acceptable_method = 0xff;
constexpr std::uint8_t k_cmd_connect = 0x01;
constexpr std::uint8_t k_cmd_bind = 0x02;
constexpr std::uint8_t k_cmd_udp_associate = 0x03;
constexpr std::uint8_t k_atyp_ipv4 = 0x01;
constexpr std::uint8_t k_atyp_domain = 0x03;
constexpr std::uint8_t k_atyp_ipv6 = 0x04;
constexpr std::uint8_t k_socks4_granted = 0x5a;
constexpr std::uint8_t k_socks4_rejected = 0x5b;
// A SOCKS4 user id or SOCKS4a host name must end (NUL) within this many bytes.
constexpr std::size_t k_max_socks4_field = 255;

std::uint8_t byte_at(std::string_view in, std::size_t i)
{
    return static_cast<std::uint8_t>(in[i]);
}

std::uint16_t port_at(std::string_view in, std::size_t i)
{
    return static_cast<std::uint16_t>(byte_at(in, i) << 8 | byte_at(in, i + 1));
}

std::string hex(std::uint8_t value)
{
    static constexpr char k_digits[] = "0123456789abcdef";
    return {'0', 'x', k_digits[value >> 4], k_digits[value & 0xf]};
}

std::string bytes(std::initializer_list<std::uint8_t> values)
{
    return std::string(values.begin(), values.end());
}

std::string address_text(std::string_view raw, IpFamily family)
{
    IpAddress address;
    address.family = family;
    std::copy(raw.begin(), raw.end(), address.bytes.begin());
    return address.to_string();
}

// A name goes into logs and into a direct-tcpip request: no control
// characters, no spaces, no NUL.
bool clean_name(std::string_view name)
{
    return std::none_of(name.begin(), name.end(), [](char c) {
        const auto b = static_cast<unsigned char>(c);
        return b <= 0x20 || b == 0x7f;
    });
}

// Takes a time that depends on the length of what the client sent, not on
// where it differs from the secret.
bool same_secret(std::string_view given, std::string_view expected)
{
    unsigned difference = given.size() != expected.size() ? 1 : 0;
    for (std::size_t i = 0; i < given.size(); ++i)
        difference |=
            static_cast<unsigned char>(given[i]) ^ (i < expected.size() ? static_cast<unsigned char>(expected[i]) : 0u);
    return difference == 0;
}

std::string socks5_reply(SocksReply reply)
{
    return bytes({k_v5, static_cast<std::uint8_t>(reply), 0x00, k_atyp_ipv4, 0, 0, 0, 0, 0, 0});
}

std::string socks4_reply(bool granted)
{
    return bytes({0x00, granted ? k_socks4_granted : k_socks4_rejected, 0, 0, 0, 0, 0, 0});
}

} // namespace

const char *socks_reply_text(SocksReply reply)
{
    switch (reply) {
    case SocksReply::succeeded: return "succeeded";
    case SocksReply::general_failure: return "general failure";
    case SocksReply::not_allowed: return "connection not allowed by ruleset";
    case SocksReply::network_unreachable: return "network unreachable";
    case SocksReply::host_unreachable: return "host unreachable";
    case SocksReply::connection_refused: return "connection refused";
    case SocksReply::ttl_expired: return "TTL expired";
    case SocksReply::command_not_supported: return "command not supported";
    case SocksReply::address_type_not_supported: return "address type not supported";
    }
    return "unknown reply";
}

// ---- what both sides share --------------------------------------------------

SocksStep SocksHandshake::feed(std::string_view bytes_in)
{
    if (end_ == End::complete) {
        early_.append(bytes_in);
        return {SocksStep::Kind::complete, {}, {}};
    }
    if (end_ == End::failed)
        return {SocksStep::Kind::failed, {}, reason_};

    buffer_.append(bytes_in);
    SocksStep step;
    std::size_t used = 0;
    while (end_ == End::open) {
        const std::size_t answered = step.send.size();
        const auto n = parse(std::string_view(buffer_).substr(used), step.send);
        if (!n)
            break;
        used += *n;
        // A peer that has to wait for our answer cannot have sent more yet.
        if (!pipelining_ && end_ == End::open && step.send.size() > answered && used < buffer_.size()) {
            step.send.resize(answered);
            fail("the SOCKS peer sent data before it could have read our answer (" +
                 std::to_string(buffer_.size() - used) + " bytes too early)");
        }
    }
    buffer_.erase(0, used);
    switch (end_) {
    case End::complete:
        early_ = std::exchange(buffer_, {});
        step.kind = SocksStep::Kind::complete;
        break;
    case End::failed:
        buffer_ = {};
        step.kind = SocksStep::Kind::failed;
        step.reason = reason_;
        break;
    case End::open:
        step.kind = step.send.empty() ? SocksStep::Kind::need_more : SocksStep::Kind::send_and_continue;
        break;
    }
    return step;
}

std::size_t SocksHandshake::complete(std::size_t size)
{
    end_ = End::complete;
    return size;
}

std::nullopt_t SocksHandshake::fail(std::string reason)
{
    end_ = End::failed;
    reason_ = std::move(reason);
    return std::nullopt;
}

// ---- the proxy's side -------------------------------------------------------

SocksServerHandshake::SocksServerHandshake(std::optional<SocksCredentials> credentials)
    : SocksHandshake(true), credentials_(std::move(credentials))
{
}

std::string SocksServerHandshake::reply(SocksReply reply) const
{
    if (request_.version == 4)
        return socks4_reply(reply == SocksReply::succeeded);
    return socks5_reply(reply);
}

std::nullopt_t SocksServerHandshake::refuse(std::string &send, const std::string &reply, std::string reason)
{
    send += reply;
    return fail(std::move(reason));
}

// Each parser returns the bytes its message used, or nothing while the
// message is incomplete (or after a refusal).
std::optional<std::size_t> SocksServerHandshake::parse(std::string_view in, std::string &send)
{
    switch (phase_) {
    case Phase::version:
        if (in.empty())
            return std::nullopt;
        if (byte_at(in, 0) == k_v5) {
            phase_ = Phase::greeting;
            return 0;
        }
        if (byte_at(in, 0) == k_v4) {
            phase_ = Phase::request4;
            return 0;
        }
        return fail("not a SOCKS request (first byte " + hex(byte_at(in, 0)) + ")");
    case Phase::greeting: return parse_greeting(in, send);
    case Phase::auth: return parse_auth(in, send);
    case Phase::request5: return parse_request5(in, send);
    case Phase::request4: return parse_request4(in, send);
    }
    return std::nullopt;
}

// VER NMETHODS METHODS...
std::optional<std::size_t> SocksServerHandshake::parse_greeting(std::string_view in, std::string &send)
{
    if (in.size() < 2)
        return std::nullopt;
    const std::size_t count = byte_at(in, 1);
    const std::string no_method = bytes({k_v5, k_no_acceptable_method});
    if (count == 0)
        return refuse(send, no_method, "SOCKS5 greeting offers no authentication method");
    if (in.size() < 2 + count)
        return std::nullopt;
    const auto methods = in.substr(2, count);
    const std::uint8_t wanted = credentials_ ? k_method_password : k_method_none;
    if (methods.find(static_cast<char>(wanted)) == std::string_view::npos)
        return refuse(send, no_method,
                      credentials_ ? "the client does not offer user name/password authentication, which this "
                                     "forward requires"
                                   : "the client offers no method this forward accepts (only \"no authentication\")");
    send += bytes({k_v5, wanted});
    phase_ = credentials_ ? Phase::auth : Phase::request5;
    return 2 + count;
}

// RFC 1929: VER ULEN UNAME PLEN PASSWD
std::optional<std::size_t> SocksServerHandshake::parse_auth(std::string_view in, std::string &send)
{
    const std::string auth_failed = bytes({k_auth_version, 0x01});
    if (in.empty())
        return std::nullopt;
    if (byte_at(in, 0) != k_auth_version)
        return refuse(send, auth_failed, "user name/password request with version " + hex(byte_at(in, 0)));
    if (in.size() < 2)
        return std::nullopt;
    const std::size_t user_size = byte_at(in, 1);
    if (in.size() < 3 + user_size)
        return std::nullopt;
    const std::size_t password_size = byte_at(in, 2 + user_size);
    const std::size_t size = 3 + user_size + password_size;
    if (in.size() < size)
        return std::nullopt;
    const auto user = in.substr(2, user_size);
    const auto password = in.substr(3 + user_size, password_size);
    // Both compared whatever the first gave, so timing tells nothing either.
    const bool user_ok = same_secret(user, credentials_->user);
    const bool password_ok = same_secret(password, credentials_->password);
    if (!(user_ok && password_ok))
        return refuse(send, auth_failed, "wrong user name or password (user '" + printable(user) + "')");
    send += bytes({k_auth_version, 0x00});
    request_.user = std::string(user);
    phase_ = Phase::request5;
    return size;
}

// VER CMD RSV ATYP DST.ADDR DST.PORT
std::optional<std::size_t> SocksServerHandshake::parse_request5(std::string_view in, std::string &send)
{
    if (in.size() < 4)
        return std::nullopt;
    const std::uint8_t version = byte_at(in, 0);
    const std::uint8_t command = byte_at(in, 1);
    const std::uint8_t atyp = byte_at(in, 3);
    if (version != k_v5)
        return refuse(send, socks5_reply(SocksReply::general_failure), "SOCKS5 request with version " + hex(version));
    if (command != k_cmd_connect) {
        const std::string what = command == k_cmd_bind            ? "BIND"
                                 : command == k_cmd_udp_associate ? "UDP ASSOCIATE"
                                                                  : "command " + hex(command);
        return refuse(send, socks5_reply(SocksReply::command_not_supported),
                      "SOCKS5 " + what + " is not supported (only CONNECT)");
    }
    if (byte_at(in, 2) != 0x00)
        return refuse(send, socks5_reply(SocksReply::general_failure), "SOCKS5 request with a reserved byte not 0");

    std::size_t size = 0;
    switch (atyp) {
    case k_atyp_ipv4:
    case k_atyp_ipv6: {
        const bool v4 = atyp == k_atyp_ipv4;
        const std::size_t address_size = v4 ? 4 : 16;
        size = 4 + address_size + 2;
        if (in.size() < size)
            return std::nullopt;
        request_.address_type = v4 ? SocksRequest::AddressType::ipv4 : SocksRequest::AddressType::ipv6;
        request_.host = address_text(in.substr(4, address_size), v4 ? IpFamily::v4 : IpFamily::v6);
        break;
    }
    case k_atyp_domain: {
        if (in.size() < 5)
            return std::nullopt;
        const std::size_t length = byte_at(in, 4);
        if (length == 0)
            return refuse(send, socks5_reply(SocksReply::general_failure), "SOCKS5 request with an empty domain name");
        size = 5 + length + 2;
        if (in.size() < size)
            return std::nullopt;
        const auto name = in.substr(5, length);
        if (!clean_name(name))
            return refuse(send, socks5_reply(SocksReply::general_failure),
                          "SOCKS5 domain name with control characters or spaces: '" + printable(name) + "'");
        request_.address_type = SocksRequest::AddressType::domain;
        request_.host = std::string(name);
        break;
    }
    default:
        return refuse(send, socks5_reply(SocksReply::address_type_not_supported),
                      "SOCKS5 request with unknown address type " + hex(atyp));
    }
    request_.version = 5;
    request_.port = port_at(in, size - 2);
    return complete(size);
}

// VN CD DSTPORT DSTIP USERID NUL [HOST NUL]  (SOCKS4a: DSTIP 0.0.0.x, x != 0)
std::optional<std::size_t> SocksServerHandshake::parse_request4(std::string_view in, std::string &send)
{
    const std::string rejected = socks4_reply(false);
    if (in.size() < 8)
        return std::nullopt;
    const std::uint8_t command = byte_at(in, 1);
    if (command != k_cmd_connect)
        return refuse(send, rejected,
                      command == k_cmd_bind ? "SOCKS4 BIND is not supported (only CONNECT)"
                                            : "SOCKS4 command " + hex(command) + " is not supported (only CONNECT)");
    if (credentials_)
        return refuse(send, rejected,
                      "SOCKS4 cannot authenticate and this forward requires a user name and password (use SOCKS5)");

    // A NUL-terminated field starting at `from`: nothing while it is
    // incomplete, or when it is refused.
    std::size_t end = 0;
    const auto field_at = [&](std::size_t from, const char *what) -> std::optional<std::string_view> {
        const auto window = in.substr(from, k_max_socks4_field + 1);
        const auto nul = window.find('\0');
        if (nul == std::string_view::npos) {
            if (window.size() > k_max_socks4_field)
                refuse(send, rejected, std::string("SOCKS4 ") + what + " longer than 255 bytes");
            return std::nullopt;
        }
        const auto field = window.substr(0, nul);
        if (!clean_name(field)) {
            refuse(send, rejected,
                   std::string("SOCKS4 ") + what + " with control characters or spaces: '" + printable(field) + "'");
            return std::nullopt;
        }
        end = from + nul + 1;
        return field;
    };

    const auto user = field_at(8, "user id");
    if (!user)
        return std::nullopt;
    request_.user = std::string(*user);
    const auto ip = in.substr(4, 4);
    const bool socks4a = ip[0] == 0 && ip[1] == 0 && ip[2] == 0 && ip[3] != 0;
    if (socks4a) {
        const auto host = field_at(end, "host name");
        if (!host)
            return std::nullopt;
        if (host->empty())
            return refuse(send, rejected, "SOCKS4a request with an empty host name");
        request_.address_type = SocksRequest::AddressType::domain;
        request_.host = std::string(*host);
    } else {
        request_.address_type = SocksRequest::AddressType::ipv4;
        request_.host = address_text(ip, IpFamily::v4);
    }
    request_.version = 4;
    request_.port = port_at(in, 2);
    return complete(end);
}

// ---- the client's side ------------------------------------------------------

Socks5ClientHandshake::Socks5ClientHandshake(std::string host, std::uint16_t port,
                                             std::optional<SocksCredentials> credentials)
    : SocksHandshake(false), host_(std::move(host)), port_(port), credentials_(std::move(credentials))
{
}

SocksStep Socks5ClientHandshake::start()
{
    const auto failed_step = [&](std::string reason) {
        fail(reason);
        return SocksStep{SocksStep::Kind::failed, {}, std::move(reason)};
    };
    if (phase_ != Phase::start || failed())
        return failed_step("SOCKS5 handshake started twice");
    if (!IpAddress::parse(host_) && (host_.empty() || host_.size() > 255 || !clean_name(host_)))
        return failed_step("cannot ask a SOCKS5 proxy for host '" + printable(host_) +
                           "': a name must be 1-255 characters without spaces or control characters");
    if (credentials_) {
        const auto fits = [](const std::string &s) { return !s.empty() && s.size() <= 255; };
        if (!fits(credentials_->user) || !fits(credentials_->password))
            return failed_step("SOCKS5 proxy user name and password must each be 1-255 bytes (RFC 1929)");
    }
    phase_ = Phase::method;
    SocksStep step{SocksStep::Kind::send_and_continue, {}, {}};
    step.send = credentials_ ? bytes({k_v5, 2, k_method_none, k_method_password}) : bytes({k_v5, 1, k_method_none});
    return step;
}

std::string Socks5ClientHandshake::connect_request() const
{
    std::string request = bytes({k_v5, k_cmd_connect, 0x00});
    if (const auto address = IpAddress::parse(host_)) {
        request += static_cast<char>(address->family == IpFamily::v4 ? k_atyp_ipv4 : k_atyp_ipv6);
        request.append(reinterpret_cast<const char *>(address->bytes.data()), address->size());
    } else {
        request += static_cast<char>(k_atyp_domain);
        request += static_cast<char>(host_.size());
        request += host_;
    }
    request += static_cast<char>(port_ >> 8);
    request += static_cast<char>(port_ & 0xff);
    return request;
}

std::optional<std::size_t> Socks5ClientHandshake::parse(std::string_view in, std::string &send)
{
    switch (phase_) {
    case Phase::start: return fail("SOCKS5 handshake fed before start()");
    case Phase::method: {
        // VER METHOD
        if (in.size() < 2)
            return std::nullopt;
        if (byte_at(in, 0) != k_v5)
            return fail("not a SOCKS5 proxy (it answered " + hex(byte_at(in, 0)) + ")");
        const std::uint8_t method = byte_at(in, 1);
        if (method == k_method_none) {
            send += connect_request();
            phase_ = Phase::connect;
        } else if (method == k_method_password && credentials_) {
            send += bytes({k_auth_version, static_cast<std::uint8_t>(credentials_->user.size())});
            send += credentials_->user;
            send += static_cast<char>(credentials_->password.size());
            send += credentials_->password;
            phase_ = Phase::auth;
        } else if (method == k_no_acceptable_method) {
            credentials_refused_ = true;
            return fail(credentials_ ? "the SOCKS5 proxy accepts none of our authentication methods"
                                     : "the SOCKS5 proxy accepts none of our authentication methods (does it "
                                       "need a user name and password?)");
        } else {
            return fail("the SOCKS5 proxy chose authentication method " + hex(method) + ", which we did not offer");
        }
        return 2;
    }
    case Phase::auth:
        // VER STATUS
        if (in.size() < 2)
            return std::nullopt;
        if (byte_at(in, 0) != k_auth_version)
            return fail("the SOCKS5 proxy answered user name/password with version " + hex(byte_at(in, 0)));
        if (byte_at(in, 1) != 0x00) {
            credentials_refused_ = true;
            return fail("the SOCKS5 proxy refused our user name or password");
        }
        send += connect_request();
        phase_ = Phase::connect;
        return 2;
    case Phase::connect: {
        // VER REP RSV ATYP BND.ADDR BND.PORT
        if (in.size() < 2)
            return std::nullopt;
        if (byte_at(in, 0) != k_v5)
            return fail("the SOCKS5 proxy answered CONNECT with version " + hex(byte_at(in, 0)));
        const auto reply = static_cast<SocksReply>(byte_at(in, 1));
        proxy_reply_ = reply;
        // A refusal is final whatever follows (some proxies close at once).
        if (reply != SocksReply::succeeded)
            return fail("the SOCKS5 proxy could not connect to " + printable(host_) + ":" + std::to_string(port_) +
                        ": " + socks_reply_text(reply) + " (reply " + hex(byte_at(in, 1)) + ")");
        if (in.size() < 5)
            return std::nullopt;
        if (byte_at(in, 2) != 0x00)
            return fail("the SOCKS5 proxy's reply has a reserved byte not 0");
        std::size_t size = 0;
        switch (byte_at(in, 3)) {
        case k_atyp_ipv4: size = 4 + 4 + 2; break;
        case k_atyp_ipv6: size = 4 + 16 + 2; break;
        case k_atyp_domain: size = 5 + byte_at(in, 4) + 2; break;
        default: return fail("the SOCKS5 proxy's reply has unknown address type " + hex(byte_at(in, 3)));
        }
        if (in.size() < size)
            return std::nullopt;
        return complete(size);
    }
    }
    return std::nullopt;
}

} // namespace pytun::detail
