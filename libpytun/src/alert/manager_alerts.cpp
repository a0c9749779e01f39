// SPDX-License-Identifier: MIT
// forward_alerts: the TunnelManager's events become the Alerter's input.
#include <pytun/alerter.h>
#include <pytun/manager.h>

namespace pytun {
namespace {

// A standby bound the port: where, from the manager's status (the event
// names only the tunnel).
AlertEvent took_over(const TunnelManager &manager, const TunnelEvent &event)
{
    AlertEvent alert;
    alert.tunnel_name = event.name;
    alert.since = event.when;
    alert.kind = AlertEvent::Kind::took_over;
    alert.standby_for = std::chrono::duration_cast<std::chrono::seconds>(event.standby_for);
    for (const TunnelStatus &t : manager.status())
        if (t.name == event.name) {
            alert.bastion = t.server_host + ":" + std::to_string(t.server_port);
            alert.listen_port = t.listen_port;
        }
    return alert;
}

} // namespace

Subscription forward_alerts(TunnelManager &manager, Alerter &alerter)
{
    return manager.subscribe([&manager, &alerter](const TunnelEvent &event) {
        AlertEvent alert;
        alert.tunnel_name = event.name;
        alert.since = event.when;
        if (!event.bastion_to.empty()) {
            // The serving bastion changed; the state did not.
            alert.kind = event.bastion_returned ? AlertEvent::Kind::returned : AlertEvent::Kind::failed_over;
            alert.error = event.message;
            alerter.notify(alert);
            return;
        }
        switch (event.to) {
        case ManagedState::backing_off:
            alert.kind = AlertEvent::Kind::down;
            alert.error = event.message;
            break;
        case ManagedState::up:
        case ManagedState::standby: // another connector serves: working, not an error
            alert.kind = AlertEvent::Kind::recovered; // ignored unless it was down or degraded
            break;
        case ManagedState::degraded:
            alert.kind = AlertEvent::Kind::degraded;
            alert.error = event.message;
            break;
        case ManagedState::connecting:
        case ManagedState::stopped:
            return;
        }
        alerter.notify(alert);
        if (event.standby_for.count() > 0)
            alerter.notify(took_over(manager, event));
    });
}

} // namespace pytun
