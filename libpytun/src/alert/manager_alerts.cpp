// SPDX-License-Identifier: MIT
// forward_alerts: the TunnelManager's events become the Alerter's input.
#include <pytun/alerter.h>
#include <pytun/manager.h>

namespace pytun {

Subscription forward_alerts(TunnelManager &manager, Alerter &alerter)
{
    return manager.subscribe([&alerter](const TunnelEvent &event) {
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
    });
}

} // namespace pytun
