// SPDX-License-Identifier: MIT
// pytun --test_smtp / --test_http: send one test alert and report how it went.
#include "commands.h"

#include <pytun/alerter.h>

namespace pytun::cli {

int test_smtp(const Config &config, std::ostream &out)
{
    Alerter alerter(config.connector);
    std::string detail;
    std::error_code ec = alerter.send_test_email(detail);
    out << "test e-mail: " << (ec ? "FAILED: " : "sent: ") << detail << "\n";
    return alert_exit_code(ec);
}

int test_http(const Config &config, std::ostream &out)
{
    Alerter alerter(config.connector);
    std::string detail;
    std::error_code ec = alerter.send_test_webhook(detail);
    out << "test webhook: " << (ec ? "FAILED: " : "sent: ") << detail << "\n";
    return alert_exit_code(ec);
}

} // namespace pytun::cli
