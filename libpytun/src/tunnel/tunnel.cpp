// SPDX-License-Identifier: MIT
// TEMPORARY placeholder while the engine is written (not to land).
#include <pytun/tunnel.h>
#include <pytun/error.h>
namespace pytun {
struct Tunnel::Impl { TunnelOptions options; };
Tunnel::Tunnel(TunnelOptions options) : impl_(std::make_unique<Impl>(Impl{std::move(options)})) {}
Tunnel::~Tunnel() = default;
std::error_code Tunnel::start() { return Errc::invalid_options; }
void Tunnel::stop() {}
std::error_code Tunnel::wait() { return Errc::stopped; }
bool Tunnel::wait_for(std::chrono::milliseconds, std::error_code &r) { r = Errc::stopped; return true; }
TunnelState Tunnel::state() const { return TunnelState::stopped; }
std::uint16_t Tunnel::listen_port() const { return 0; }
std::error_code Tunnel::last_error() const { return {}; }
std::string Tunnel::last_error_message() const { return {}; }
TunnelStats Tunnel::stats() const { return {}; }
const TunnelOptions &Tunnel::options() const { return impl_->options; }
}
