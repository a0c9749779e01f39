// SPDX-License-Identifier: MIT
// The reverse tunnel most integration tests start: through the fixture's
// sshd, authenticated with its ed25519 key, to a local service.
#pragma once

#include <chrono>
#include <cstdint>

#include <pytun/tunnel.h>

#include "fixture.h"

namespace pytun::test {

/// 127.0.0.1:(port the bastion chooses) on `server` -> 127.0.0.1:service_port.
inline pytun::TunnelOptions tunnel_options(const SshServer &server, std::uint16_t service_port)
{
    pytun::TunnelOptions o;
    o.name = "test";
    o.server_host = "127.0.0.1";
    o.server_port = server.port();
    o.username = server.user();
    o.key_file = server.key_ed25519();
    o.known_hosts_file = server.known_hosts_bracketed();
    o.bind_address = "127.0.0.1";
    o.listen_port = 0; // the bastion chooses
    o.remote_host = "127.0.0.1";
    o.remote_port = service_port;
    o.connect_timeout = std::chrono::seconds(10);
    return o;
}

} // namespace pytun::test
