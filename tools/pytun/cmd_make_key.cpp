// SPDX-License-Identifier: MIT
// pytun --make-key TUNNEL.ini: a fresh ed25519 key for one tunnel and the
// authorized_keys line that lets it do exactly what the tunnel needs.
#include "commands.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <vector>

extern char **environ;

namespace pytun::cli {
namespace {

namespace fs = std::filesystem;

std::string safe_comment(const std::string &name)
{
    std::string s;
    for (unsigned char ch : name)
        s.push_back(std::isalnum(ch) || ch == '.' || ch == '_' || ch == '-' ? static_cast<char>(ch) : '-');
    return s;
}

// The value of `key` on line `line` of an INI file (comments and quotes removed).
std::string ini_value_at(const std::string &file, int line)
{
    std::ifstream in(file);
    std::string text;
    for (int i = 0; i < line && std::getline(in, text); ++i) {
    }
    auto sep = text.find_first_of("=:");
    if (sep == std::string::npos)
        return {};
    std::string v = text.substr(sep + 1);
    for (const char *c : {" #", " ;", "\t#", "\t;"})
        if (auto p = v.find(c); p != std::string::npos)
            v.resize(p);
    auto b = v.find_first_not_of(" \t\r");
    auto e = v.find_last_not_of(" \t\r");
    v = b == std::string::npos ? std::string() : v.substr(b, e - b + 1);
    if (v.size() >= 2 && (v.front() == '"' || v.front() == '\'') && v.back() == v.front())
        v = v.substr(1, v.size() - 2);
    return v;
}

// The tunnel file, loaded as the connector would (tunnel_dirs = its directory).
LoadResult load_tunnel(const fs::path &file)
{
    const std::string dir = file.parent_path().string();
    return load_config_from_string("[pytun]\ntunnel_manager_id = make-key\ntunnel_dirs = " + dir + "\n", "ini", dir);
}

int keygen(const fs::path &key, const std::string &comment)
{
    std::vector<std::string> args{"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", key.string()};
    std::vector<char *> argv;
    for (auto &a : args)
        argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    pid_t pid = 0;
    int rc = posix_spawnp(&pid, "ssh-keygen", &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
        std::cerr << "pytun: cannot run ssh-keygen (" << std::strerror(rc) << "): install openssh-client\n";
        return k_exit_failed;
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        std::cerr << "pytun: ssh-keygen failed making " << key << "\n";
        return k_exit_failed;
    }
    return k_exit_ok;
}

} // namespace

int make_key(const std::string &tunnel_file)
{
    std::error_code ec;
    const fs::path file = fs::absolute(tunnel_file, ec);
    if (ec || !fs::is_regular_file(file)) {
        std::cerr << "pytun: " << tunnel_file << ": no such tunnel file\n";
        return k_exit_failed;
    }
    LoadResult loaded = load_tunnel(file);

    // A tunnel whose keyfile does not exist yet gets its key exactly there.
    fs::path key;
    bool only_keyfile_missing = !loaded.ok();
    int keyfile_line = 0;
    for (const auto &d : loaded.diagnostics) {
        if (d.severity != Diagnostic::Severity::error || d.file != file.string())
            continue;
        if (d.key == "keyfile" && d.line > 0)
            keyfile_line = d.line;
        else
            only_keyfile_missing = false;
    }
    if (only_keyfile_missing && keyfile_line > 0) {
        fs::path wanted = ini_value_at(file.string(), keyfile_line);
        if (!wanted.empty() && wanted.is_relative())
            wanted = file.parent_path() / wanted;
        if (!wanted.empty() && !fs::exists(wanted, ec))
            key = wanted;
    }
    if (key.empty() && !loaded.ok()) {
        for (const auto &d : loaded.diagnostics)
            if (d.file == file.string())
                std::cerr << d.to_string() << "\n";
        std::cerr << "pytun: fix " << file.string() << " first\n";
        return k_exit_failed;
    }
    if (key.empty())
        key = file.parent_path() / (file.stem().string() + "_ed25519");
    if (fs::exists(key, ec) || fs::exists(key.string() + ".pub", ec)) {
        std::cerr << "pytun: " << key.string() << " already exists; not overwriting it (move it away first)\n";
        return k_exit_failed;
    }

    const TunnelConfig *tunnel = nullptr;
    std::string name = file.stem().string();
    if (loaded.ok()) {
        for (const auto &t : loaded.config->tunnels)
            if (t.source_file == file.string())
                tunnel = &t;
        if (!tunnel) {
            std::cerr << "pytun: " << file.string() << " defines no tunnel\n";
            return k_exit_failed;
        }
        name = tunnel->tunnel_name;
    }
    if (int rc = keygen(key, "pytun-" + safe_comment(name)); rc != 0)
        return rc;
    if (!tunnel) {
        loaded = load_tunnel(file); // the keyfile exists now
        if (!loaded.ok()) {
            for (const auto &d : loaded.diagnostics)
                std::cerr << d.to_string() << "\n";
            return k_exit_failed;
        }
        for (const auto &t : loaded.config->tunnels)
            if (t.source_file == file.string())
                tunnel = &t;
        if (!tunnel)
            return k_exit_failed;
        name = tunnel->tunnel_name;
    }

    std::ifstream pub(key.string() + ".pub");
    std::string type, blob;
    pub >> type >> blob;
    // libssh2 asks for 0.0.0.0 when no bind_address is set; permitlisten compares the string.
    const std::string host = tunnel->bind_address.empty() ? "0.0.0.0" : tunnel->bind_address;
    std::cerr << "pytun: created " << key.string() << " (and .pub)\n";
    if (fs::path(tunnel->keyfile) != key)
        std::cerr << "pytun: to use it, set in " << file.string() << ":  keyfile = " << key.filename().string()
                  << "\n";
    std::cerr << "pytun: add this line to ~" << tunnel->username << "/.ssh/authorized_keys on " << tunnel->server_host
              << " (it allows listening on " << host << ":" << tunnel->port << ", no shell, no commands):\n";
    std::cout << "restrict,port-forwarding,permitlisten=\"" << host << ":" << tunnel->port
              << "\",command=\"/bin/false\" " << type << " " << blob << " pytun-" << safe_comment(name) << "\n";
    return k_exit_ok;
}

} // namespace pytun::cli
