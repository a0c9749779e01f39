// SPDX-License-Identifier: MIT
// pytun --test_all: every check, with a readable report of what failed and what to do.
#include "commands.h"

#include <unistd.h>

#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <pytun/device.h>
#include <pytun/health.h>

namespace pytun::cli {
namespace {

struct Section {
    std::string title;
    bool passed = true;
    bool skipped = false;
    std::string output;
    std::string advice;
};

void print(std::ostream &out, const Section &s)
{
    out << (s.skipped ? "[skip] " : s.passed ? "[ ok ] " : "[FAIL] ") << s.title << "\n";
    std::istringstream lines(s.output);
    for (std::string line; std::getline(lines, line);)
        if (!line.empty())
            out << "       " << line << "\n";
    if (!s.passed || s.skipped)
        out << "       -> " << s.advice << "\n";
}

} // namespace

int test_all(const Config &config, std::ostream &out)
{
    const auto &c = config.connector;
    out << "pytun self-test of " << config.main_file << " (tunnel_manager_id " << c.tunnel_manager_id << ")\n\n";
    std::vector<Section> sections;

    sections.push_back({"configuration: " + std::to_string(config.tunnels.size()) + " tunnel(s) loaded", true,
                        false, "", ""});

    DeviceAuthorization device = check_device_authorization(c);
    sections.push_back({"device authorization", device.authorized, false, device.message,
                        "fix signature / mac_address_pub_key, or run on the machine the signature was made for"});

    std::ostringstream conn;
    int rc = test_connections(config, conn);
    sections.push_back({"local services (--test_connections, exit " + std::to_string(rc) + ")", rc == 0, false,
                        conn.str(), "start the service, or fix remote_host / remote_port in the tunnel file"});

    std::ostringstream tun;
    rc = test_tunnels(config, tun);
    sections.push_back({"tunnels to the bastion (--test_tunnels, exit " + std::to_string(rc) + ")", rc == 0, false,
                        tun.str(),
                        "see the message: host key (server_key), key (keyfile; pytun --make-key), port, bastion"});

    std::ostringstream mail;
    rc = test_smtp(config, mail);
    sections.push_back({"e-mail alerts (--test_smtp, exit " + std::to_string(rc) + ")", rc == 0,
                        rc == k_exit_not_configured, mail.str(),
                        rc == k_exit_not_configured ? "set smtp_hostname and smtp_to to get e-mail alerts"
                                                    : "check smtp_hostname, smtp_port, smtp_security and the login"});

    std::ostringstream hook;
    rc = test_http(config, hook);
    sections.push_back({"webhook alerts (--test_http, exit " + std::to_string(rc) + ")", rc == 0,
                        rc == k_exit_not_configured, hook.str(),
                        rc == k_exit_not_configured ? "set http_url, http_user and http_password to get webhook alerts"
                                                    : "check http_url and the credentials"});

    const std::string host = "127.0.0.1"; // bound on every address or on loopback: both answer here
    ServiceHealth api = HealthMonitor::probe(host, c.inspection_port, std::chrono::seconds(1));
    sections.push_back({"service state", true, false,
                        api.reachable ? "a connector answers on " + host + ":" + std::to_string(c.inspection_port) +
                                            " (the service is running)"
                                      : "no connector is running (nothing on " + host + ":" +
                                            std::to_string(c.inspection_port) + ")",
                        ""});

    std::size_t failed = 0, skipped = 0;
    for (const auto &s : sections) {
        print(out, s);
        failed += !s.passed && !s.skipped;
        skipped += s.skipped;
    }
    out << "\n" << sections.size() << " checks: " << failed << " failed, " << skipped << " not configured\n";
    out.flush();
    if (isatty(STDIN_FILENO)) {
        out << "Press Enter to exit." << std::flush;
        std::string line;
        std::getline(std::cin, line);
    }
    return k_exit_ok;
}

} // namespace pytun::cli
