// SPDX-License-Identifier: MIT
// The wording of alerts and the time formats they use.
#include "messages.h"

#include <ctime>
#include <cstdio>

namespace pytun::detail {
namespace {

std::tm utc(SysTime t)
{
    const std::time_t tt = std::chrono::system_clock::to_time_t(t);
    std::tm tm{};
    gmtime_r(&tt, &tm);
    return tm;
}

std::string name_or_connector(const Alert &a)
{
    return a.tunnel_name.empty() ? std::string("the connector") : a.tunnel_name;
}

std::string error_line(const Alert &a)
{
    return a.error.empty() ? std::string() : "\nError: " + a.error + "\n";
}

} // namespace

std::string iso8601_utc(SysTime t)
{
    const std::tm tm = utc(t);
    char buf[96];
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                  tm.tm_hour, tm.tm_min, tm.tm_sec);
    return buf;
}

std::string rfc5322_date(SysTime t)
{
    // strftime's %a/%b follow LC_TIME, which the embedding application may set.
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    const std::tm tm = utc(t);
    char buf[96];
    std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday % 7], tm.tm_mday,
                  months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    return buf;
}

std::string duration_words(std::chrono::seconds d)
{
    long long s = d.count() < 0 ? 0 : d.count();
    const long long h = s / 3600, m = (s / 60) % 60;
    s %= 60;
    char buf[64];
    if (h > 0)
        std::snprintf(buf, sizeof buf, "%lldh %02lldm %02llds", h, m, s);
    else if (m > 0)
        std::snprintf(buf, sizeof buf, "%lldm %02llds", m, s);
    else
        std::snprintf(buf, sizeof buf, "%llds", s);
    return buf;
}

void word_alert(Alert &a)
{
    const std::string who = name_or_connector(a);
    const std::string id = "Manager id: " + a.tunnel_manager_id;
    const std::string since = iso8601_utc(a.since);
    a.subject = a.tunnel_name.empty() ? "Connector notification" : "Connector " + a.tunnel_name + " notification";
    switch (a.event) {
    case Alert::Event::down:
        a.state = "down";
        a.message = "Connector Down!";
        a.body = "This email is to let you know that " + who + " is down! " + id + "\n" + error_line(a) +
                 "Down since: " + since + "\n";
        break;
    case Alert::Event::still_down:
        a.state = "down";
        a.message = "Connector still down";
        a.body = "This email is to let you know that " + who + " is still down, for " +
                 duration_words(std::chrono::duration_cast<std::chrono::seconds>(a.time - a.since)) + " now. " +
                 id + "\n" + error_line(a) + "Down since: " + since + "\n";
        break;
    case Alert::Event::recovered:
        a.state = "up";
        a.message = "Connector recovered";
        a.body = "This email is to let you know that " + who + " works again after " +
                 duration_words(a.down_for) + " down. " + id + "\n\nUp since: " + since + "\n";
        break;
    case Alert::Event::flapping: {
        const bool down = a.state == "down";
        a.message = "Connector flapping";
        a.body = "This email is to let you know that " + who + " is flapping: it went down " +
                 std::to_string(a.downs) + " more time(s) and came back " + std::to_string(a.recoveries) +
                 " time(s) since the last notification. It is now " + (down ? "down" : "up") + ". " + id + "\n" +
                 (down ? error_line(a) : std::string()) + (down ? "Down since: " : "\nUp since: ") + since +
                 "\n";
        break;
    }
    case Alert::Event::degraded:
        a.state = "degraded";
        a.message = "Connector degraded";
        a.body = "This email is to let you know that " + who + " is degraded. " + id + "\n" + error_line(a) +
                 "Degraded since: " + since + "\n";
        break;
    case Alert::Event::service_unreachable:
        a.state = "up";
        // The original's wording; the error text completes it.
        a.message = a.error;
        a.body = a.error + "\n\nTunnel: " + who + ". " + id + "\n";
        break;
    case Alert::Event::unauthorized:
        a.state = "unauthorized";
        a.message = "Connector down! The device where it is installed is not allowed to run it.";
        a.body = a.message + " " + id + "\n" + error_line(a);
        break;
    case Alert::Event::took_over:
        a.state = "up";
        a.message = "Standby took over";
        a.body = "This email is to let you know that " + who + " is served by this connector now: the standby took over port " +
                 std::to_string(a.listen_port) + " on the bastion " + a.bastion + " after " +
                 duration_words(a.standby_for) + " in standby (the connector that held the port went away). " + id +
                 "\n\nUp since: " + since + "\n";
        break;
    case Alert::Event::failed_over:
    case Alert::Event::returned:
        // Serving all along (the tunnel was not down): the error says from which bastion to which.
        a.state = "up";
        a.message = a.event == Alert::Event::failed_over ? "Connector failed over to another bastion"
                                                         : "Connector returned to its first bastion";
        a.body = "This email is to let you know that " + who + " " + a.error + ". " + id + "\n\nSince: " + since +
                 "\n";
        break;
    case Alert::Event::test:
        a.state = "test";
        a.message = "Connector test notification";
        a.body = "This is a test alert from the connector. If you read it, alerts reach you. " + id + "\n";
        break;
    }
}

} // namespace pytun::detail
