// SPDX-License-Identifier: MIT
// Uses every public header with nothing but the standard library, libpytun and
// libpytun-connector.
#include <pytun/alerter.h>
#include <pytun/config.h>
#include <pytun/connector_config.h>
#include <pytun/crypto.h>
#include <pytun/device.h>
#include <pytun/error.h>
#include <pytun/health.h>
#include <pytun/resources.h>
#include <pytun/log.h>
#include <pytun/logging.h>
#include <pytun/manager.h>
#include <pytun/status_server.h>
#include <pytun/subscription.h>
#include <pytun/tunnel.h>
#include <pytun/version.h>

#include <cstdio>

int main()
{
    std::error_code ec = pytun::Errc::host_key_unknown;
    if (ec.category().name() != std::string("pytun") || ec.message().find("known_hosts") == std::string::npos) {
        std::fprintf(stderr, "error category broken: %s\n", ec.message().c_str());
        return 1;
    }
    pytun::set_log_level(pytun::LogLevel::warning);
    if (pytun::descriptor_stats().limit == 0 || pytun::descriptors_needed(1) == 0) {
        std::fprintf(stderr, "descriptor figures missing\n");
        return 1;
    }
    pytun::TunnelOptions options; // defaults documented in compat.md
    if (options.server_port != 22 || options.listen_port != 4000) {
        std::fprintf(stderr, "unexpected option defaults\n");
        return 1;
    }
    pytun::Tunnel tunnel(options);
    // Invalid options (no host, no user) are reported as a value, not thrown.
    std::error_code started = tunnel.start();
    if (started != pytun::Errc::invalid_options) {
        std::fprintf(stderr, "start() with empty options returned %s\n", started.message().c_str());
        return 1;
    }
    // The configuration loader reports problems as values too.
    pytun::LoadResult loaded = pytun::load_config("/nonexistent/connector.ini");
    if (loaded.ok() || loaded.diagnostics.empty()) {
        std::fprintf(stderr, "loading a missing file did not report a diagnostic\n");
        return 1;
    }
    pytun::TunnelManager manager;
    if (manager.thread_count() == 0 || !manager.status().empty()) {
        std::fprintf(stderr, "a new manager should have threads and no tunnels\n");
        return 1;
    }
    // Decided when the first tunnel starts, not before.
    if (pytun::aes_ctr_implementation() != "not decided yet") {
        std::fprintf(stderr, "AES-CTR decided before any tunnel started\n");
        return 1;
    }
    std::printf("pytun %s (libssh2 %s, %s)\n", pytun::version().c_str(), pytun::libssh2_version().c_str(),
                pytun::openssl_version().c_str());
    return 0;
}
