// SPDX-License-Identifier: MIT
// Public entry points of configuration loading: picks the format, finds the
// tunnel files, runs the checks across files and assembles the LoadResult.
#include <pytun/config.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>

#include "config/file_checks.h"
#include "config/ini_parser.h"
#include "config/raw.h"
#include "config/schema.h"
#include "config/toml_reader.h"

namespace pytun {

namespace fs = std::filesystem;
using namespace config;

std::string Diagnostic::to_string() const
{
    std::string s = severity == Severity::warning ? "warning: " : "";
    s += file;
    if (line > 0)
        s += ":" + std::to_string(line);
    s += ": ";
    if (!key.empty())
        s += key + ": ";
    s += message;
    return s;
}

bool LoadResult::ok() const
{
    return config.has_value();
}

namespace {

constexpr const char *k_string_file = "<string>";

// Larger than any real config (the biggest seen are a few kB); what is larger
// is a mistake (a log or a key named *.ini) and would otherwise be parsed,
// quoted and printed whole.
constexpr std::size_t k_max_config_bytes = 1u << 20;

// Reads a config file: a regular file of at most k_max_config_bytes. The
// type is checked on the opened descriptor (opened non-blocking, so a FIFO
// cannot hang the open), and no more than the limit is ever read.
std::optional<std::string> read_file(const fs::path &p, std::string &why)
{
    const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        why = std::strerror(errno);
        return std::nullopt;
    }
    struct Closer {
        int fd;
        ~Closer() { ::close(fd); }
    } closer{fd};
    struct stat st{};
    if (::fstat(fd, &st) != 0) {
        why = std::strerror(errno);
        return std::nullopt;
    }
    if (!S_ISREG(st.st_mode)) {
        why = S_ISFIFO(st.st_mode) ? "it is a FIFO, not a regular file"
              : S_ISDIR(st.st_mode) ? "it is a directory, not a regular file"
                                    : "it is a device or socket, not a regular file";
        return std::nullopt;
    }
    if (static_cast<std::uint64_t>(st.st_size) > k_max_config_bytes) {
        why = "it is larger than " + std::to_string(k_max_config_bytes >> 10) + " KiB (" +
              std::to_string(st.st_size) + " bytes; a config file is a few kB): is it the right file?";
        return std::nullopt;
    }
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    std::string text(k_max_config_bytes + 1, '\0');
    std::size_t got = 0;
    while (got < text.size()) {
        const ssize_t n = ::read(fd, text.data() + got, text.size() - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            why = std::strerror(errno);
            return std::nullopt;
        }
        if (n == 0)
            break;
        got += static_cast<std::size_t>(n);
    }
    if (got > k_max_config_bytes) { // grew while read
        why = "it is larger than " + std::to_string(k_max_config_bytes >> 10) + " KiB: is it the right file?";
        return std::nullopt;
    }
    text.resize(got);
    return text;
}

fs::path absolute_normal(const fs::path &p)
{
    std::error_code ec;
    fs::path a = fs::absolute(p, ec);
    return (ec ? p : a).lexically_normal();
}

/// Log file names come from tunnel names in TOML, so keep them to safe characters.
std::string file_safe(std::string_view name)
{
    std::string out;
    for (unsigned char c : name)
        out += (std::isalnum(c) || c == '.' || c == '-' || c == '_') ? static_cast<char>(c) : '_';
    if (out.empty() || out.front() == '.')
        out.insert(0, "tunnel");
    return out;
}

/// Reads every *.ini directly in the connector's tunnel_dirs. Returns false
/// when the directory itself is unusable (already reported).
bool load_tunnel_dir(const BuiltConnector &main, const std::string &main_file, Diagnostics &diag,
                     std::vector<BuiltTunnel> &out)
{
    const fs::path dir = main.config.tunnel_dirs;
    std::error_code ec;
    fs::file_status st = fs::status(dir, ec);
    if (!fs::exists(st)) {
        diag.error(main_file, main.tunnel_dirs_line, "tunnel_dirs",
                   dir.string() + " does not exist: create it and put the tunnel .ini files there, or fix "
                                  "tunnel_dirs (relative paths start at the main file's directory)");
        return false;
    }
    if (!fs::is_directory(st)) {
        diag.error(main_file, main.tunnel_dirs_line, "tunnel_dirs",
                   dir.string() + " is not a directory: set tunnel_dirs to the directory of tunnel .ini files");
        return false;
    }
    std::vector<fs::path> files;
    for (const fs::directory_entry &e : fs::directory_iterator(dir, ec)) {
        const std::string name = e.path().filename().string();
        std::error_code fec;
        if (name.size() > 4 && name.ends_with(".ini") && e.is_regular_file(fec))
            files.push_back(e.path());
    }
    if (ec) {
        diag.error(main_file, main.tunnel_dirs_line, "tunnel_dirs",
                   dir.string() + " cannot be listed (" + ec.message() + "): give pytun read access to it");
        return false;
    }
    std::sort(files.begin(), files.end());

    for (const fs::path &path : files) {
        const std::string file = path.string();
        std::string why;
        std::optional<std::string> text = read_file(path, why);
        if (!text) {
            diag.error(file, 0, "", "cannot read the tunnel file: " + why + ": give pytun read access to it, or move it out of the tunnel directory");
            continue;
        }
        std::vector<RawSection> sections = parse_ini(*text, file, diag);
        std::optional<RawSection> tunnel;
        for (RawSection &s : sections) {
            if (s.name != "tunnel" && s.name != "connector") {
                diag.warning(file, s.line, "",
                             "unknown section [" + s.name + "]: ignored (a tunnel file has one [tunnel] section)");
            } else if (!tunnel) {
                tunnel = std::move(s);
            } else {
                diag.warning(file, s.line, "",
                             "second tunnel section (first on line " + std::to_string(tunnel->line) +
                                 "): one tunnel per file, so its keys are merged into the first");
                for (RawValue &v : s.entries)
                    tunnel->entries.push_back(std::move(v));
            }
        }
        if (!tunnel) {
            diag.error(file, 0, "", "no [tunnel] section: start the file with [tunnel] (or [connector])");
            continue;
        }
        BuiltTunnel t = build_tunnel(*tunnel, path.parent_path(), file, diag);
        if (t.secret_line)
            check_private_mode(path, file, t.secret_line, t.secret_key, "holds a password", diag);
        t.config.source_file = file;
        t.config.source_name = path.stem().string();
        out.push_back(std::move(t));
    }
    return true;
}

/// A VPN capture needs root or CAP_NET_ADMIN and nft or iptables: a warning
/// only, since pytun --check may run as another user than the service.
void check_capture_needs(const std::vector<BuiltTunnel> &tunnels, Diagnostics &diag)
{
    for (const BuiltTunnel &t : tunnels)
        for (std::size_t i = 0; i < t.config.forwards.size(); ++i)
            if (const auto *vpn = std::get_if<TransparentForward>(&t.config.forwards[i]))
                if (std::string why = capture_unavailable(vpn->method); !why.empty())
                    diag.warning(t.file, t.forward_lines[i], t.vpn_key,
                                 "the VPN capture cannot be installed by this user here: " + why);
}

/// Checks shared by both formats, then the result: a Config only without errors.
LoadResult finish(const RawSection *main_section, std::optional<BuiltConnector> main, std::vector<BuiltTunnel> tunnels,
                  const std::string &display, const std::optional<fs::path> &real_file, const LoadOptions &options,
                  Diagnostics &diag)
{
    check_tunnel_set(tunnels, diag);
    if (options.check_runtime && main && main_section)
        check_runtime_needs(*main_section, main->config.log_path, !main->config.smtp_hostname.empty(),
                            !main->config.http_url.empty(), diag);
    if (options.check_runtime)
        check_capture_needs(tunnels, diag);
    if (main && !main->config.proxy.empty()) // [pytun]'s proxy serves every tunnel that names none
        for (BuiltTunnel &t : tunnels)
            if (t.config.proxy.empty())
                t.config.proxy = main->config.proxy;
    // The main file's first secret: its own, else a TOML tunnel's socks_password or proxy password.
    int secret_line = 0;
    std::string secret_key;
    if (main && main->holds_secrets && main_section) {
        for (const RawValue &v : main_section->entries) {
            if (((v.key == "smtp_password" || v.key == "http_password" || v.key == "inspection_token") &&
                 !(v.kind == RawValue::Kind::text && v.text.empty())) ||
                (v.key == "proxy" && v.line == main->proxy_password_line)) {
                secret_line = v.line;
                secret_key = v.key;
                break;
            }
        }
    }
    for (const BuiltTunnel &t : tunnels) {
        if (!secret_line && t.secret_line && t.file == display) {
            secret_line = t.secret_line;
            secret_key = t.secret_key;
        }
    }
    if (secret_line && real_file)
        check_private_mode(*real_file, display, secret_line, secret_key, "holds passwords", diag);
    LoadResult result;
    if (!diag.has_errors() && main) {
        Config c;
        c.connector = std::move(main->config);
        for (BuiltTunnel &t : tunnels) {
            if (!t.standby_set)
                t.config.standby = c.connector.standby;
            if (!t.config.failback_after)
                t.config.failback_after = c.connector.failback_after;
            c.tunnels.push_back(std::move(t.config));
        }
        c.main_file = real_file ? real_file->string() : display;
        result.config = std::move(c);
    }
    result.diagnostics = diag.take();
    return result;
}

LoadResult load_ini_text(std::string_view text, const std::string &display, const fs::path &base_dir,
                         const std::optional<fs::path> &real_file, const LoadOptions &options)
{
    Diagnostics diag;
    std::vector<RawSection> sections = parse_ini(text, display, diag);
    std::optional<RawSection> main;
    for (RawSection &s : sections) {
        if (s.name != "pytun" && s.name != "config-connector") {
            diag.warning(display, s.line, "", "unknown section [" + s.name + "]: ignored (expected [pytun])");
        } else if (!main) {
            main = std::move(s);
        } else {
            diag.warning(display, s.line, "",
                         "section [" + s.name + "] repeats the main section (first on line " +
                             std::to_string(main->line) + "): its keys are merged");
            for (RawValue &v : s.entries)
                main->entries.push_back(std::move(v));
        }
    }
    if (!main) {
        diag.error(display, 0, "", "no [pytun] section: start the file with [pytun] (or [config-connector])");
        return finish(nullptr, std::nullopt, {}, display, real_file, options, diag);
    }
    BuiltConnector built = build_connector(*main, base_dir, Format::ini, diag);
    std::vector<BuiltTunnel> tunnels;
    if (!built.config.tunnel_dirs.empty() && load_tunnel_dir(built, display, diag, tunnels) && tunnels.empty())
        diag.warning(display, built.tunnel_dirs_line, "tunnel_dirs",
                     "no tunnels configured: " + built.config.tunnel_dirs + " holds no .ini files");
    return finish(&*main, std::move(built), std::move(tunnels), display, real_file, options, diag);
}

LoadResult load_toml_text(std::string_view text, const std::string &display, const fs::path &base_dir,
                          const std::optional<fs::path> &real_file, const LoadOptions &options)
{
    Diagnostics diag;
    TomlSections toml = read_toml(text, display, diag);
    if (diag.has_errors() && !toml.main && toml.tunnels.empty())
        return finish(nullptr, std::nullopt, {}, display, real_file, options, diag);

    std::optional<BuiltConnector> built;
    if (toml.main)
        built = build_connector(*toml.main, base_dir, Format::toml, diag);
    else
        diag.error(display, 0, "", "no [pytun] table: add [pytun] with tunnel_manager_id and the other main keys");

    std::vector<BuiltTunnel> tunnels;
    for (std::size_t i = 0; i < toml.tunnels.size(); ++i) {
        BuiltTunnel t = build_tunnel(toml.tunnels[i], base_dir, "tunnel-" + std::to_string(i + 1), diag);
        t.config.source_file = real_file ? real_file->string() : display;
        t.config.source_name = file_safe(t.config.tunnel_name);
        tunnels.push_back(std::move(t));
    }
    bool dir_ok = true;
    if (built && !built->config.tunnel_dirs.empty())
        dir_ok = load_tunnel_dir(*built, display, diag, tunnels);
    if (built && dir_ok && tunnels.empty())
        diag.warning(display, toml.main->line, "", "no tunnels configured: add [[tunnel]] tables (or tunnel_dirs)");
    return finish(toml.main ? &*toml.main : nullptr, std::move(built), std::move(tunnels), display, real_file,
                  options, diag);
}

using TextLoader = LoadResult (*)(std::string_view, const std::string &, const fs::path &,
                                  const std::optional<fs::path> &, const LoadOptions &);

LoadResult load_file(const std::string &path, TextLoader loader, const LoadOptions &options)
{
    const fs::path file = absolute_normal(path);
    std::string why;
    std::optional<std::string> text = read_file(file, why);
    if (!text) {
        LoadResult r;
        r.diagnostics.push_back({Diagnostic::Severity::error, file.string(), 0, "",
                                 "cannot read the main config: " + why +
                                     ": check the path given with --config_ini"});
        return r;
    }
    return loader(*text, file.string(), file.parent_path(), file, options);
}

} // namespace

LoadResult load_config(const std::string &path)
{
    return load_config(path, LoadOptions{});
}

LoadResult load_config(const std::string &path, const LoadOptions &options)
{
    const fs::path p(path);
    if (to_lower(p.extension().string()) == ".toml")
        return load_file(path, load_toml_text, options);
    std::error_code ec;
    if (!fs::exists(p, ec)) {
        // The original's earlier releases called the main file pytun.ini.
        fs::path legacy = absolute_normal(p).parent_path() / "pytun.ini";
        if (fs::exists(legacy, ec))
            return load_file(legacy.string(), load_ini_text, options);
    }
    return load_file(path, load_ini_text, options);
}

LoadResult load_config_ini(const std::string &path)
{
    return load_file(path, load_ini_text, LoadOptions{});
}

LoadResult load_config_toml(const std::string &path)
{
    return load_file(path, load_toml_text, LoadOptions{});
}

LoadResult load_config_from_string(std::string_view text, std::string_view format, std::string base_dir)
{
    const fs::path base = absolute_normal(base_dir.empty() ? fs::path(".") : fs::path(base_dir));
    const std::string f = to_lower(format);
    if (f == "toml")
        return load_toml_text(text, k_string_file, base, std::nullopt, LoadOptions{});
    if (f == "ini")
        return load_ini_text(text, k_string_file, base, std::nullopt, LoadOptions{});
    LoadResult r;
    r.diagnostics.push_back({Diagnostic::Severity::error, k_string_file, 0, "",
                             "unknown format '" + std::string(format) + "': use \"ini\" or \"toml\""});
    return r;
}

TunnelOptions to_tunnel_options(const TunnelConfig &tunnel)
{
    TunnelOptions o;
    o.name = tunnel.tunnel_name;
    o.server_host = tunnel.server_host;
    o.server_port = tunnel.server_port;
    o.username = tunnel.username;
    o.key_file = tunnel.keyfile;
    o.known_hosts_file = tunnel.server_key;
    o.bind_address = tunnel.bind_address;
    o.listen_port = tunnel.port;
    o.remote_host = tunnel.remote_host;
    o.remote_port = tunnel.remote_port;
    o.keep_alive = tunnel.keep_alive_time;
    o.max_connections = tunnel.max_connections;
    o.forwards = tunnel.forwards;
    o.max_sessions = tunnel.max_sessions;
    o.min_sessions = tunnel.min_sessions;
    o.open_timeout = tunnel.open_timeout;
    o.standby = tunnel.standby;
    o.config_path = tunnel.source_file;
    o.failover = tunnel.failover;
    o.failback_after = tunnel.failback_after.value_or(ConnectorConfig{}.failback_after);
    std::string ignored; // validated when loaded
    if (!tunnel.proxy.empty())
        o.proxy = parse_proxy(tunnel.proxy, ignored).value_or(ProxyOptions{});
    if (!tunnel.jump.empty()) {
        o.jump = parse_jump(tunnel.jump, ignored).value_or(JumpHost{});
        o.jump.key_file = tunnel.jump_keyfile;
        o.jump.known_hosts_file = tunnel.jump_server_key;
    }
    return o;
}

} // namespace pytun
