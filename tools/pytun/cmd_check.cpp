// SPDX-License-Identifier: MIT
// pytun --check: load and validate everything, print every problem, start nothing.
#include "commands.h"

#include <iostream>

#include <pytun/device.h>
#include <pytun/resources.h>

namespace pytun::cli {

int check_config(const std::string &config_path)
{
    LoadOptions options;
    options.check_runtime = true; // what only the running connector would meet, too
    auto config = load_or_report(config_path, options);
    if (!config)
        return k_exit_failed;
    DeviceAuthorization device = check_device_authorization(config->connector);
    if (!device.authorized) {
        std::cerr << config->main_file << ": signature: " << device.message << "\n"
                  << "pytun: this device is not authorized to run the connector\n";
        return k_exit_failed;
    }
    const EnvironmentProxy environment = environment_proxy(*config);
    if (!environment.error.empty()) {
        std::cerr << "pytun: " << environment.error << "\n";
        return k_exit_failed;
    }
    std::cout << "pytun: " << config->main_file << " is valid: " << config->tunnels.size()
              << (config->tunnels.size() == 1 ? " tunnel" : " tunnels") << "\n";
    for (const auto &t : config->tunnels) {
        // The route as the tunnel will take it: never the proxy's password.
        const std::string route = describe_route(tunnel_options(t, environment));
        std::cout << "  " << t.tunnel_name << ": " << t.server_host << ":" << t.server_port;
        if (!t.remote_host.empty())
            std::cout << " port " << t.port << " -> " << t.remote_host << ":" << t.remote_port;
        std::cout << (route.empty() ? "" : " " + route) << " (" << t.source_file << ")\n";
        for (const auto &forward : t.forwards)
            std::cout << "    " << describe(forward) << "\n";
    }
    if (environment.proxy)
        std::cout << "  tunnels that set no proxy use " << describe(*environment.proxy) << " from "
                  << environment.variable
                  << (environment.no_proxy.empty() ? "" : " (no_proxy: " + environment.no_proxy + ")") << "\n";
    if (!config->connector.signature.empty())
        std::cout << "  " << device.message << "\n";
    // The limit the connector will run with: the hard one (it raises the
    // soft limit at start).
    std::string message;
    const DescriptorLimit fds = raise_descriptor_limit(message);
    if (std::string warning = descriptor_limit_warning(fds.soft, config->tunnels.size()); !warning.empty())
        std::cerr << "warning: " << warning << "\n";
    return k_exit_ok;
}

} // namespace pytun::cli
