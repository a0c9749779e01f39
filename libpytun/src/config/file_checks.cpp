// SPDX-License-Identifier: MIT
// What the files named by a configuration must be for the tunnels to work.
#include "config/file_checks.h"

#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <vector>

#include <spdlog/logger.h>

#include "alert/curl_util.h"
#include "ssh/key_file.h"
#include "ssh/known_hosts.h"

namespace pytun::config {

namespace fs = std::filesystem;

namespace {

// The group docs/service.md makes for the service (files root:pytun 0640).
constexpr const char *k_service_group = "pytun";

// Larger than any private key (an RSA 16384 key in PEM is about 13 KiB).
constexpr std::uintmax_t k_max_key_file = 1024 * 1024;

std::string mode_text(mode_t mode)
{
    char text[8];
    std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(mode & 07777));
    return text;
}

std::string user_name(uid_t uid)
{
    if (const passwd *pw = ::getpwuid(uid))
        return pw->pw_name;
    return std::to_string(uid);
}

std::string group_name(gid_t gid)
{
    if (const group *gr = ::getgrgid(gid))
        return gr->gr_name;
    return std::to_string(gid);
}

/// This process's groups, and the service's group: whoever is in those may
/// read the service's secrets.
bool service_group(gid_t gid)
{
    if (gid == ::getegid())
        return true;
    const int n = ::getgroups(0, nullptr);
    std::vector<gid_t> groups(static_cast<std::size_t>(n > 0 ? n : 0));
    if (n > 0 && ::getgroups(n, groups.data()) == n)
        for (gid_t g : groups)
            if (g == gid)
                return true;
    const group *gr = ::getgrnam(k_service_group);
    return gr && gr->gr_gid == gid;
}

std::string keyscan(const std::string &host, std::uint16_t port)
{
    return "ssh-keyscan -p " + std::to_string(port) + " " + (host.empty() ? "HOST" : host);
}

} // namespace

std::string expand_home(std::string_view path)
{
    if (path.empty() || path.front() != '~')
        return std::string(path);
    const std::size_t slash = path.find('/');
    const std::string_view name = path.substr(1, slash == std::string_view::npos ? std::string_view::npos : slash - 1);
    std::string home;
    if (name.empty()) {
        const char *env = std::getenv("HOME");
        if (env && *env)
            home = env;
        else if (const passwd *pw = ::getpwuid(::geteuid()))
            home = pw->pw_dir;
    } else if (const passwd *pw = ::getpwnam(std::string(name).c_str())) {
        home = pw->pw_dir;
    }
    if (home.empty())
        return std::string(path);
    return home + std::string(slash == std::string_view::npos ? std::string_view() : path.substr(slash));
}

void check_private_mode(const fs::path &path, const std::string &file, int line, const std::string &key,
                        const std::string &why, Diagnostics &diag)
{
    struct stat st{};
    if (::stat(path.c_str(), &st) != 0)
        return;
    const mode_t mode = st.st_mode;
    const bool others = mode & S_IRWXO;
    const bool group_writes = mode & S_IWGRP;
    const bool ours = service_group(st.st_gid);
    const bool foreign_group_reads = (mode & S_IRGRP) && !ours;
    if (!others && !group_writes && !foreign_group_reads)
        return;
    const std::string p = path.string();
    std::string problem = others              ? "can be read by every user"
                          : foreign_group_reads ? "can be read by group " + group_name(st.st_gid) +
                                                      ", which is not the service's"
                                                : "can be changed by group " + group_name(st.st_gid);
    // Keep the service's way in: its group (root:pytun 0640), or its owner.
    std::string fix;
    if (ours)
        fix = "chmod 640 " + p;
    else if (st.st_uid == ::geteuid() && ::geteuid() != 0)
        fix = "chmod 600 " + p;
    else if (const group *gr = ::getgrnam(k_service_group))
        fix = std::string("chgrp ") + gr->gr_name + " " + p + " && chmod 640 " + p;
    else
        fix = "chgrp " + group_name(::getegid()) + " " + p + " && chmod 640 " + p;
    diag.warning(file, line, key, p + " " + why + " but " + problem + " (mode " + mode_text(mode) + "): run " + fix);
}

void check_key_content(const fs::path &path, const std::string &file, int line, const std::string &key,
                       Diagnostics &diag)
{
    // Read only what can be a key: procfs and sysfs files say 0 bytes and may
    // block when read (/proc/kmsg), and a private key is a few KiB.
    std::error_code ec;
    const auto size = fs::file_size(path, ec);
    if (ec || size == 0 || size > k_max_key_file) {
        diag.error(file, line, key,
                   path.string() + (size == 0 ? " is empty" : " is too large for a private key") +
                       ": set " + key + " to the private key file");
        return;
    }
    detail::KeyFileInfo info;
    std::string message;
    if (detail::inspect_key_file(path.string(), info, message)) {
        diag.error(file, line, key, message);
        return;
    }
    if (info.encrypted) {
        // The original connector had no passphrase setting either: a service
        // starts unattended.
        const std::string p = path.string();
        diag.error(file, line, key,
                   p + " is encrypted with a passphrase, which pytun cannot give (it starts unattended and has no "
                       "passphrase setting): make an unencrypted copy that only the service can read (cp " + p + " " +
                       p + ".pytun && ssh-keygen -p -N '' -f " + p + ".pytun) and set " + key + " to it");
        return;
    }
    if (info.key_type == "ssh-dss")
        diag.warning(file, line, key,
                     path.string() + " is a DSA key, which OpenSSH 7.0 and later refuse: make an ed25519 key "
                                     "(pytun --make-key " + file + ")");
}

void check_known_hosts_content(const fs::path &path, const std::string &host, std::uint16_t port,
                               const std::string &file, int line, const std::string &key, Diagnostics &diag)
{
    const std::string p = path.string();
    // Never advise overwriting what the file holds now (a key, a config).
    const std::string target =
        (path.filename() == "known_hosts" ? path : path.parent_path() / "known_hosts").string();
    const std::string make = "make one with " + keyscan(host, port) + " > " + target +
                             ", compare the fingerprints with the bastion's (ssh-keygen -lf " + target +
                             ") and set " + key + " to it";
    std::error_code ec;
    if (fs::file_size(path, ec) == 0 || ec) { // also what procfs says, where reading may block
        diag.error(file, line, key, p + " is empty: " + make);
        return;
    }
    std::ifstream in(path, std::ios::binary);
    std::string first;
    std::getline(in, first);
    if (first.find("PRIVATE KEY-----") != std::string::npos) {
        diag.error(file, line, key, p + " is a private key, not a known_hosts file: " + make);
        return;
    }
    in.clear();
    in.seekg(0);
    spdlog::logger quiet("known_hosts check"); // no sinks: the lines it skips are reported below
    detail::KnownHosts known;
    known.parse(in, p, host, port, quiet);
    const std::string name = port == 22 ? host : "[" + host + "]:" + std::to_string(port);
    if (known.valid_lines() == 0 && known.bare_key_lines() > 0) {
        diag.error(file, line, key,
                   p + " holds a bare public key (a .pub file), not known_hosts lines, which start with the host: "
                       "write '" + name + " ' before the key, or " + make);
    } else if (known.valid_lines() == 0) {
        diag.error(file, line, key, p + " has no known_hosts lines ('HOST KEYTYPE KEY'): " + make);
    } else if (known.entries_for_host() == 0 && !host.empty()) {
        diag.warning(file, line, key,
                     p + " has no key for " + name + ", so the bastion's host key will be refused: add it (" +
                         keyscan(host, port) + " >> " + p + ") after comparing fingerprints with the bastion's");
    }
}

void check_runtime_needs(const RawSection &main, const std::string &log_path, bool email, bool webhook,
                         Diagnostics &diag)
{
    auto line_of = [&main](std::string_view key) {
        int line = main.line; // the section's header for a key left at its default
        for (const RawValue &v : main.entries)
            if (v.key == key)
                line = v.line;
        return line;
    };
    const std::string who = "user " + user_name(::geteuid()) + " (uid " + std::to_string(::geteuid()) + ")";
    if (!log_path.empty()) {
        std::error_code ec;
        fs::path existing = log_path;
        while (!fs::exists(existing, ec) && existing.has_parent_path() && existing != existing.parent_path())
            existing = existing.parent_path();
        const std::string fix = "create it for the service: install -d -o " + user_name(::geteuid()) +
                                " -m 0750 " + log_path + " (a systemd unit with LogsDirectory=pytun gets "
                                "/var/log/pytun made for it)";
        const bool is_dir = fs::is_directory(existing, ec);
        std::string problem;
        if (existing == fs::path(log_path))
            problem = !is_dir ? log_path + " is not a directory"
                      : ::access(existing.c_str(), W_OK | X_OK) != 0 ? log_path + " is not writable by " + who
                                                                      : "";
        else
            problem = !is_dir ? log_path + " cannot be created: " + existing.string() + " is not a directory"
                      : ::access(existing.c_str(), W_OK | X_OK) != 0
                          ? log_path + " does not exist and cannot be created by " + who + ": " +
                                existing.string() + " is not writable"
                          : "";
        if (!problem.empty())
            diag.error(main.file, line_of("log_path"), "log_path", problem + ": " + fix);
    }
    if (email || webhook) {
        const std::string &why = detail::curl_api().error;
        if (!why.empty())
            diag.error(main.file, line_of(email ? "smtp_hostname" : "http_url"), email ? "smtp_hostname" : "http_url",
                       std::string(email && webhook ? "e-mail and webhook" : email ? "e-mail" : "webhook") +
                           " alerts need libcurl, which cannot be loaded here: " + why +
                           "; install it (apt-get install libcurl4), or remove the alert settings");
    }
}

} // namespace pytun::config
