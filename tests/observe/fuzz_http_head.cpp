// SPDX-License-Identifier: MIT
// libFuzzer target: the inspection API's request-head checks (request line,
// target path tricks, header lines, Content-Length) and the config redaction,
// both fed untrusted bytes. Built with -Dfuzz=true from tests/fuzz.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "observe/http_guard.h"
#include "observe/redact.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size)
{
    const std::string_view input(reinterpret_cast<const char *>(data), size);
    pytun::detail::GuardLimits limits;
    (void)pytun::detail::check_head(input, limits);
    (void)pytun::detail::check_target(input, limits);
    std::vector<pytun::detail::Redaction> redactions;
    (void)pytun::detail::redact_config(input, redactions);
    (void)pytun::detail::private_key_kind(input);
    (void)pytun::detail::looks_binary(input);
    return 0;
}
