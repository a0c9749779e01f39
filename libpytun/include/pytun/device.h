// SPDX-License-Identifier: MIT
// Device authorization (compatible with the original connector): a signed MAC
// address ties an installation to one machine.
#pragma once

#include <string>
#include <vector>

#include <pytun/config.h>
#include <pytun/export.h>

namespace pytun {

/// The outcome of a device check.
struct DeviceAuthorization {
    bool authorized = false;
    std::string mac_address;   ///< the authorized MAC ("aa:bb:..."); empty when no signature is configured
    std::string message;       ///< why not (or what was checked), for the log
};

/// MAC addresses of this machine's network interfaces (lowercase,
/// colon-separated; all-zero ones skipped), read from `sys_class_net`/*/address.
PYTUN_EXPORT std::vector<std::string> local_mac_addresses(const std::string &sys_class_net = "/sys/class/net");

/// Check `signature` (base64 of {"payload": MAC, "sig": base64 RSA-PSS
/// signature}; SHA-256, MGF1-SHA-256, maximum salt length) with the PEM
/// public key in `public_key_file`, and that one of `macs` is the payload.
/// An empty signature is authorized (no device binding configured).
PYTUN_EXPORT DeviceAuthorization check_device_signature(const std::string &signature,
                                                        const std::string &public_key_file,
                                                        const std::vector<std::string> &macs);

/// check_device_signature() with the config's signature and
/// mac_address_pub_key and this machine's MAC addresses.
PYTUN_EXPORT DeviceAuthorization check_device_authorization(const ConnectorConfig &connector);

} // namespace pytun
