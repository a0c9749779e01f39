// SPDX-License-Identifier: MIT
// libFuzzer target: the inspection API's request-head checks (request line,
// target path tricks, header lines, Content-Length) and the config redaction,
// both fed untrusted bytes; the redaction also gets the input as one long
// line (past the 16 KiB it examines) and as the value of a secret key, and
// the text escaping of diagnostics gets it too. Built with -Dfuzz=true from
// tests/fuzz.
#include <cstddef>
#include <cstdint>
#include <string>
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
    // Long lines: the input repeated into one line of about 20 kB, and as a
    // secret's value (linear time whatever the bytes; nothing of it kept).
    // The first line repeated (the whole input when that line is empty: an
    // empty piece would never make the line longer).
    std::string line = "http_password = ";
    const std::string_view first = input.substr(0, input.find('\n'));
    const std::string_view piece = first.empty() ? input : first;
    while (!piece.empty() && line.size() < 20000)
        line.append(piece);
    (void)pytun::detail::redact_config(line, redactions);
    (void)pytun::detail::redact_config("x = " + std::string(input) + "\nsmtp_password " + std::string(input), redactions);
    (void)pytun::detail::private_key_kind(input);
    (void)pytun::detail::looks_binary(input);
    (void)pytun::detail::printable(input);
    (void)pytun::detail::find_control_char(input);
    return 0;
}
