// SPDX-License-Identifier: MIT
// Helpers shared by the pytun sub-commands.
#include "commands.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <iostream>

namespace pytun::cli {

std::optional<LogLevel> parse_log_level(std::string name)
{
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (name == "trace")
        return LogLevel::trace;
    if (name == "debug")
        return LogLevel::debug;
    if (name == "info")
        return LogLevel::info;
    if (name == "warning" || name == "warn") // as log_level in the configuration
        return LogLevel::warning;
    if (name == "error")
        return LogLevel::error;
    if (name == "critical")
        return LogLevel::critical;
    return std::nullopt;
}

LoggingOptions console_logging(const LogFlags &flags)
{
    LoggingOptions o;
    o.to_console = true;
    o.level = flags.level.value_or(LogLevel::info);
    o.format = flags.format;
    return o;
}

void EnvironmentProxy::apply(TunnelOptions &options) const
{
    const bool jump = !options.jump.host.empty();
    if (proxy && !no_proxy_matches(no_proxy, jump ? options.jump.host : options.server_host,
                                   jump ? options.jump.port : options.server_port))
        options.proxy = *proxy;
}

EnvironmentProxy environment_proxy()
{
    auto first_set = [](std::initializer_list<const char *> names) -> std::pair<std::string, std::string> {
        for (const char *name : names)
            if (const char *value = std::getenv(name); value && *value)
                return {name, value};
        return {};
    };
    EnvironmentProxy env;
    auto [variable, value] = first_set({"https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"});
    env.no_proxy = first_set({"no_proxy", "NO_PROXY"}).second;
    if (variable.empty())
        return env;
    env.variable = variable;
    if (value.find("://") == std::string::npos) // curl's reading: host:port is an HTTP proxy
        value = "http://" + value;
    std::string error;
    env.proxy = parse_proxy(value, error);
    if (!env.proxy)
        env.error = "the environment variable " + variable + " is not a usable proxy: " + error +
                    "; fix or unset it, or set proxy = none in [pytun]";
    else if (env.proxy->kind == ProxyOptions::Kind::none)
        env.proxy.reset();
    return env;
}

EnvironmentProxy environment_proxy(const Config &config)
{
    EnvironmentProxy env = environment_proxy();
    if (std::none_of(config.tunnels.begin(), config.tunnels.end(),
                     [](const TunnelConfig &t) { return t.proxy.empty(); }))
        env = {}; // every tunnel names its proxy (or none): the environment is not read
    return env;
}

TunnelOptions tunnel_options(const TunnelConfig &tunnel, const EnvironmentProxy &environment)
{
    TunnelOptions o = to_tunnel_options(tunnel);
    if (tunnel.proxy.empty()) // neither the tunnel nor [pytun] names one
        environment.apply(o);
    return o;
}

std::optional<Config> load_or_report(const std::string &path, const LoadOptions &options,
                                     std::vector<Diagnostic> *warnings)
{
    LoadResult result = load_config(path, options);
    if (warnings && result.ok()) {
        *warnings = std::move(result.diagnostics);
        return std::move(result.config);
    }
    for (const auto &d : result.diagnostics)
        std::cerr << d.to_string() << "\n";
    if (!result.ok()) {
        std::size_t errors = 0;
        for (const auto &d : result.diagnostics)
            errors += d.severity == Diagnostic::Severity::error;
        std::cerr << "pytun: " << errors << (errors == 1 ? " problem" : " problems") << " in the configuration ("
                  << path << "); nothing was started\n";
        return std::nullopt;
    }
    return std::move(result.config);
}

} // namespace pytun::cli
