// SPDX-License-Identifier: MIT
// libFuzzer target: known_hosts parsing (plain, [host]:port, hashed |1|,
// markers) and the host-key preference built from it.
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>

#include <pytun/log.h>

#include "log.h"
#include "ssh/known_hosts.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size)
{
    static auto log = [] {
        pytun::set_log_level(pytun::LogLevel::off);
        return pytun::detail::make_logger("fuzz");
    }();
    std::istringstream in(std::string(reinterpret_cast<const char *>(data), size));
    pytun::detail::KnownHosts known_hosts;
    known_hosts.parse(in, "fuzz", "bastion.example", 2222, *log);
    (void)known_hosts.hostkey_preference();
    return 0;
}
