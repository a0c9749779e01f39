// SPDX-License-Identifier: MIT
// libFuzzer target: the INI and TOML configuration parsers and validation.
// The first byte picks the format; the rest is the file's text.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <pytun/config.h>
#include <pytun/log.h>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size)
{
    static const bool quiet = [] {
        pytun::set_log_level(pytun::LogLevel::off);
        return true;
    }();
    (void)quiet;
    if (size == 0)
        return 0;
    const std::string_view format = (data[0] & 1) ? "toml" : "ini";
    std::string_view text(reinterpret_cast<const char *>(data + 1), size - 1);
    pytun::LoadResult result = pytun::load_config_from_string(text, format, "/nonexistent-fuzz-dir");
    // Every problem must come out as a diagnostic, never as a crash.
    for (const auto &diagnostic : result.diagnostics)
        (void)diagnostic.to_string();
    return 0;
}
