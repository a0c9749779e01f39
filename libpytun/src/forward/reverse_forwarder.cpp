// SPDX-License-Identifier: MIT
// The reverse forward: tcpip-forward, accept, dial the target.
#include "forward/reverse_forwarder.h"

#include <pytun/error.h>

#include "forward/admission.h"
#include "forward/relay.h"
#include "forward/socks_forwarder.h"
#include "ssh/connection.h"
#include "ssh/session.h"

namespace pytun::detail {
namespace {

// Forwarded connections the bastion may queue in libssh2 before we accept
// them (past this the bastion gets an open failure).
constexpr int k_accept_queue = 1024;

} // namespace

ReverseForwarder::ReverseForwarder(ReverseForwarderSpec spec, std::shared_ptr<spdlog::logger> log,
                               std::shared_ptr<TrafficCounters> counters)
    : spec_(std::move(spec)), log_(std::move(log)), counters_(std::move(counters))
{
}

ReverseForwarder::~ReverseForwarder() = default;

void ReverseForwarder::start(ForwardContext context, Handlers handlers)
{
    SshConnection &connection = context.connection;
    connection_ = &connection;
    admission_ = &context.admission;
    handlers_ = std::move(handlers);
    if (spec_.target_host.empty()) {
        auto allow = std::make_shared<DestinationSet>();
        std::string error;
        if (spec_.allow.empty() || !parse_allowlist(spec_.allow, *allow, error)) {
            handlers_.failed(Errc::invalid_options,
                             "reverse SOCKS forward: allow: " +
                                 (error.empty() ? std::string("an allowlist is required") : error));
            return;
        }
        allow_ = std::move(allow);
    }
    auto self = shared_from_this();
    SshSession &session = connection.session();
    LIBSSH2_SESSION *ssh = session.raw();
    auto bound_port = std::make_shared<int>(0);
    session.submit(
        "tcpip-forward",
        [this, ssh, bound_port] {
            const char *bind = spec_.bind_address.empty() ? nullptr : spec_.bind_address.c_str();
            listener_ = libssh2_channel_forward_listen_ex(ssh, bind, spec_.listen_port, bound_port.get(),
                                                          k_accept_queue);
            return listener_ ? 0 : libssh2_session_last_errno(ssh);
        },
        [this, self, bound_port](int rc) { on_listening(rc, *bound_port); });
}

void ReverseForwarder::on_listening(int rc, int bound_port)
{
    const std::string bind = spec_.bind_address.empty() ? std::string("(default address)") : spec_.bind_address;
    auto failed = handlers_.failed;
    if (rc != 0) {
        if (rc == LIBSSH2_ERROR_REQUEST_DENIED)
            failed(Errc::remote_port_refused,
                   "the bastion " + connection_->where() + " refused to listen on port " +
                       std::to_string(spec_.listen_port) + " " + bind +
                       ": this key or user may not listen there (permitlisten in the bastion's authorized_keys, "
                       "as for keys from pytun --make-key; PermitListen or AllowTcpForwarding in its "
                       "sshd_config), or another session holds the port (another user, or a previous pytun "
                       "session the bastion has not dropped yet); the bastion's sshd log names the reason");
        else
            failed(Errc::transport_lost, "port forward request failed: " + connection_->session().last_error_text());
        return;
    }
    const auto port = static_cast<std::uint16_t>(bound_port > 0 ? bound_port : spec_.listen_port);
    if (allow_)
        log_->info("tunnel up: bastion {} port {} -> SOCKS, to what the allowlist lets through",
                   connection_->where(), port);
    else
        log_->info("tunnel up: bastion {} port {} -> {}:{}", connection_->where(), port, spec_.target_host,
                   spec_.target_port);
    connection_->session().add_listener(
        listener_, [this, self = shared_from_this()](LIBSSH2_CHANNEL *channel) { on_channel(channel); });
    if (handlers_.ready)
        handlers_.ready(port);
}

void ReverseForwarder::on_channel(LIBSSH2_CHANNEL *channel)
{
    SshSession &session = connection_->session();
    auto relay = std::make_shared<Relay>(session.io(), log_, counters_);
    relay->attach(channel);
    session.adopt(relay);
    if (!admission_->admit(*relay))
        return;
    if (allow_)
        negotiate_reverse_socks(*relay, allow_, spec_.connect_timeout, log_);
    else
        relay->connect(spec_.target_host, spec_.target_port, spec_.connect_timeout);
}

void ReverseForwarder::stop_accepting(std::function<void()> done)
{
    if (!listener_) {
        done();
        return;
    }
    LIBSSH2_LISTENER *listener = listener_;
    listener_ = nullptr;
    SshSession &session = connection_->session();
    // Cancel first so the bastion stops accepting; open connections go on.
    // libssh2 does not wait for the cancel's reply. A probe sent after it is
    // a barrier: sshd handles requests in order, so once the probe is
    // answered the port is free again (a restart on reload can bind it at
    // once).
    session.submit(
        "cancel-tcpip-forward",
        [&session, listener] {
            session.remove_listener(listener);
            return libssh2_channel_forward_cancel(listener);
        },
        [this, self = shared_from_this(), done](int) { connection_->probe([done](int) { done(); }); });
}

} // namespace pytun::detail
