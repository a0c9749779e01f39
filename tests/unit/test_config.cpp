// SPDX-License-Identifier: MIT
// Unit tests of configuration loading: the original's INI dialect, TOML, and
// the diagnostics (file, line, key, message) for every kind of mistake.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <pytun/alerter.h>
#include <pytun/config.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "config/file_checks.h"
#include "config/ini_parser.h"
#include "config/schema.h"

namespace fs = std::filesystem;
using pytun::Diagnostic;
using pytun::LoadResult;

namespace {

/// A fresh directory per test, removed afterwards, so key files with chosen
/// modes can be created and fixtures copied without touching the source tree.
struct TempDir {
    fs::path path;
    TempDir()
    {
        std::string tmpl = (fs::temp_directory_path() / "pytun-config-XXXXXX").string();
        REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        path = tmpl;
    }
    ~TempDir()
    {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    TempDir(const TempDir &) = delete;
    TempDir &operator=(const TempDir &) = delete;
};

void write_file(const fs::path &p, const std::string &content, fs::perms mode = fs::perms::owner_read |
                                                                                  fs::perms::owner_write)
{
    fs::create_directories(p.parent_path());
    std::ofstream(p) << content;
    fs::permissions(p, mode);
}

const fs::perms k_0644 = fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                         fs::perms::others_read;

/// Copies data/config/<name> into `dir`, makes every file 0600 (git checks
/// them out 0644, which would add permission warnings) and creates the keys.
void install_fixture(const std::string &name, const fs::path &dir)
{
    fs::copy(fs::path(PYTUN_TEST_DATA) / name, dir, fs::copy_options::recursive);
    for (const auto &e : fs::recursive_directory_iterator(dir)) {
        if (e.is_regular_file())
            fs::permissions(e.path(), fs::perms::owner_read | fs::perms::owner_write);
    }
}

std::string dump(const LoadResult &r)
{
    std::string s;
    for (const Diagnostic &d : r.diagnostics)
        s += d.to_string() + "\n";
    return s;
}

/// Number of diagnostics matching all of: severity, file name ending, line, key, a word of the message.
int count(const LoadResult &r, Diagnostic::Severity sev, const std::string &file_end, int line,
          const std::string &key, const std::string &word)
{
    int n = 0;
    for (const Diagnostic &d : r.diagnostics) {
        if (d.severity == sev && d.file.ends_with(file_end) && d.line == line && d.key == key &&
            d.message.find(word) != std::string::npos)
            ++n;
    }
    return n;
}

// A real (throwaway) unencrypted ed25519 key: keyfile must hold a key pytun can use.
constexpr const char *k_key = "-----BEGIN OPENSSH PRIVATE KEY-----\n"
                              "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
                              "QyNTUxOQAAACBB1DGeCn4+F+5RIgwlxZ8IW8/aIIetYAvxgU+K8d81hgAAAJhA1i2HQNYt\n"
                              "hwAAAAtzc2gtZWQyNTUxOQAAACBB1DGeCn4+F+5RIgwlxZ8IW8/aIIetYAvxgU+K8d81hg\n"
                              "AAAEAL+3Ewud9gEU9kjt/EKG1Ymb/EmtIomkCvuUxgtb+LlEHUMZ4Kfj4X7lEiDCXFnwhb\n"
                              "z9ogh61gC/GBT4rx3zWGAAAAEXB5dHVuLWNvbmZpZy10ZXN0AQIDBA==\n"
                              "-----END OPENSSH PRIVATE KEY-----\n";

// The same kind of key, encrypted with a passphrase, and a public key file.
constexpr const char *k_encrypted_key = "-----BEGIN OPENSSH PRIVATE KEY-----\n"
                                        "b3BlbnNzaC1rZXktdjEAAAAACmFlczI1Ni1jdHIAAAAGYmNyeXB0AAAAGAAAABDERAy+mP\n"
                                        "QTFF+T5bCvxpFWAAAAEAAAAAEAAAAzAAAAC3NzaC1lZDI1NTE5AAAAIAACaZ459JpdeQCM\n"
                                        "CebIre/u7zc+a2mUk9WmBiAPVLj0AAAAoIRq4rqMZBc0b4YoTIFUKnHeYz5JD8IZiPgGj/\n"
                                        "IZirr9/CcjP1MIAIpD4EJRL7jgjia7f5fxpGa6X2LdgQJNRW93rSBFPwzi8UcgMRxodX+L\n"
                                        "gyKNjX9ll8OpnHnRopGb0dS4WAkU5ipEzo+22s3SRgsJQO5M4mcaAWGrlI4E/WArjmNao3\n"
                                        "v9afc99SgqrDFB705+xD/Qihb+BQGh+jLNhZk=\n"
                                        "-----END OPENSSH PRIVATE KEY-----\n";
constexpr const char *k_public_key =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAACaZ459JpdeQCMCebIre/u7zc+a2mUk9WmBiAPVLj0 pytun-config-test\n";

// known_hosts for the host "h" on port 22.
constexpr const char *k_known_hosts_h = "h ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFixtureHostKeyNotReal0000000000000000000\n";

constexpr auto E = Diagnostic::Severity::error;
constexpr auto W = Diagnostic::Severity::warning;

} // namespace

TEST_CASE("original-style INI installation loads with every value as written")
{
    TempDir tmp;
    install_fixture("original", tmp.path);
    write_file(tmp.path / "configs/keys/id_ldap", k_key);
    write_file(tmp.path / "keys/id_ssh", k_key);

    LoadResult r = pytun::load_config((tmp.path / "connector.ini").string());
    INFO(dump(r));
    REQUIRE(r.ok());
    // inspection_localhost_only=off without... a token is set, so no warning at all.
    CHECK(r.diagnostics.empty());
    const pytun::Config &c = *r.config;
    CHECK(c.main_file == (tmp.path / "connector.ini").string());

    const pytun::ConnectorConfig &m = c.connector;
    CHECK(m.tunnel_manager_id == "site-42");
    CHECK(m.tunnel_dirs == (tmp.path / "configs").string());
    CHECK(m.log_level == pytun::LogLevel::debug);
    CHECK(m.log_to_console == true);
    CHECK(m.log_path == (tmp.path / "logs").string());
    CHECK(m.inspection_port == 10999);
    CHECK(m.inspection_localhost_only == false);
    CHECK(m.inspection_token == "s3cret #1");
    CHECK(m.smtp_hostname == "mail.example.com");
    CHECK(m.smtp_port == 587);
    CHECK(m.smtp_security == pytun::SmtpSecurity::starttls);
    CHECK(m.smtp_login == "alerts@example.com");
    CHECK(m.smtp_password == "pa ss");
    CHECK(m.smtp_from == "alerts@example.com"); // defaults to smtp_login
    CHECK(m.smtp_to == std::vector<std::string>{"ops@example.com", "oncall@example.com"});
    CHECK(m.smtp_ca_file.empty());
    CHECK(m.smtp_verify_tls == true);
    CHECK(m.http_url == "https://hooks.example.com/pytun");
    CHECK(m.http_user == "hook");
    CHECK(m.http_password == "hookpw");
    CHECK(m.signature.empty());
    CHECK(m.grace_period_ms == std::chrono::milliseconds(2500));

    // Only the three *.ini files directly in configs/, in name order.
    REQUIRE(c.tunnels.size() == 3);
    const pytun::TunnelConfig &ldap = c.tunnels[0];
    CHECK(ldap.tunnel_name == "LDAP");
    CHECK(ldap.server_host == "bastion.example.com");
    CHECK(ldap.server_port == 2222);
    CHECK(ldap.port == 10389); // the inline comment is not part of the value
    CHECK(ldap.bind_address.empty());
    CHECK(ldap.remote_host == "ldap.local");
    CHECK(ldap.remote_port == 389);
    CHECK(ldap.username == "tunnel");
    CHECK(ldap.keyfile == (tmp.path / "configs/keys/id_ldap").string());
    CHECK(ldap.server_key == (tmp.path / "configs/known_hosts").string());
    CHECK(ldap.keep_alive_time == std::chrono::seconds(2));
    CHECK(ldap.log_level == pytun::LogLevel::info);
    CHECK(ldap.log_to_console == false); // the original read "False" as true
    CHECK(ldap.source_file == (tmp.path / "configs/10-ldap.ini").string());
    CHECK(ldap.source_name == "10-ldap");

    const pytun::TunnelConfig &ssh = c.tunnels[1];
    CHECK(ssh.tunnel_name == "Test Tunnel");
    CHECK(ssh.server_port == 22);
    CHECK(ssh.port == 4001);
    CHECK(ssh.bind_address == "127.0.0.1");
    CHECK(ssh.remote_host == "127.0.0.1");
    CHECK(ssh.remote_port == 22);
    CHECK(ssh.keyfile == (tmp.path / "keys/id_ssh").string()); // relative to the tunnel file
    CHECK(ssh.log_to_console == true);
    CHECK(ssh.source_name == "20-ssh");

    const pytun::TunnelConfig &def = c.tunnels[2];
    CHECK(def.tunnel_name == (tmp.path / "configs/30-defaults.ini").string());
    CHECK(def.server_port == 22);
    CHECK(def.port == 4000);
    CHECK(def.remote_port == 22);
    CHECK(def.keep_alive_time == std::chrono::seconds(30));
    CHECK(def.log_level == pytun::LogLevel::debug);
    CHECK(def.log_to_console == false);
    CHECK(def.source_name == "30-defaults");
}

TEST_CASE("TOML equivalent loads to the same values")
{
    TempDir tmp;
    install_fixture("original", tmp.path);
    fs::copy(fs::path(PYTUN_TEST_DATA) / "toml/connector.toml", tmp.path / "connector.toml");
    fs::permissions(tmp.path / "connector.toml", fs::perms::owner_read | fs::perms::owner_write);
    write_file(tmp.path / "configs/keys/id_ldap", k_key);
    write_file(tmp.path / "keys/id_ssh", k_key);

    LoadResult ini = pytun::load_config((tmp.path / "connector.ini").string());
    LoadResult toml = pytun::load_config((tmp.path / "connector.toml").string());
    INFO(dump(ini), dump(toml));
    REQUIRE(ini.ok());
    REQUIRE(toml.ok());
    CHECK(toml.diagnostics.empty());
    const pytun::ConnectorConfig &a = ini.config->connector;
    const pytun::ConnectorConfig &b = toml.config->connector;
    CHECK(b.tunnel_dirs.empty()); // TOML holds its tunnels itself
    CHECK(a.tunnel_manager_id == b.tunnel_manager_id);
    CHECK(a.log_level == b.log_level);
    CHECK(a.log_to_console == b.log_to_console);
    CHECK(a.log_path == b.log_path);
    CHECK(a.inspection_port == b.inspection_port);
    CHECK(a.inspection_localhost_only == b.inspection_localhost_only);
    CHECK(a.inspection_token == b.inspection_token);
    CHECK(a.smtp_hostname == b.smtp_hostname);
    CHECK(a.smtp_port == b.smtp_port);
    CHECK(a.smtp_security == b.smtp_security);
    CHECK(a.smtp_login == b.smtp_login);
    CHECK(a.smtp_password == b.smtp_password);
    CHECK(a.smtp_from == b.smtp_from);
    CHECK(a.smtp_to == b.smtp_to);
    CHECK(a.smtp_verify_tls == b.smtp_verify_tls);
    CHECK(a.http_url == b.http_url);
    CHECK(a.http_user == b.http_user);
    CHECK(a.http_password == b.http_password);
    CHECK(a.grace_period_ms == b.grace_period_ms);

    REQUIRE(toml.config->tunnels.size() == ini.config->tunnels.size());
    for (std::size_t i = 0; i < ini.config->tunnels.size(); ++i) {
        const pytun::TunnelConfig &x = ini.config->tunnels[i];
        const pytun::TunnelConfig &y = toml.config->tunnels[i];
        CAPTURE(i);
        if (i < 2)
            CHECK(x.tunnel_name == y.tunnel_name);
        CHECK(x.server_host == y.server_host);
        CHECK(x.server_port == y.server_port);
        CHECK(x.port == y.port);
        CHECK(x.bind_address == y.bind_address);
        CHECK(x.remote_host == y.remote_host);
        CHECK(x.remote_port == y.remote_port);
        CHECK(x.username == y.username);
        CHECK(x.keyfile == y.keyfile);
        CHECK(x.server_key == y.server_key);
        CHECK(x.keep_alive_time == y.keep_alive_time);
        CHECK(x.log_level == y.log_level);
        CHECK(x.log_to_console == y.log_to_console);
        CHECK(y.source_file == (tmp.path / "connector.toml").string());
    }
    // Unnamed TOML tunnels are numbered; log files follow the (safe) name.
    CHECK(toml.config->tunnels[2].tunnel_name == "tunnel-3");
    CHECK(toml.config->tunnels[1].source_name == "Test_Tunnel");
}

TEST_CASE("legacy pytun.ini is used when connector.ini is absent")
{
    TempDir tmp;
    install_fixture("legacy", tmp.path);
    write_file(tmp.path / "configs/id_only", k_key);
    LoadResult r = pytun::load_config((tmp.path / "connector.ini").string());
    INFO(dump(r));
    REQUIRE(r.ok());
    CHECK(r.config->main_file == (tmp.path / "pytun.ini").string());
    CHECK(r.config->connector.tunnel_manager_id == "legacy");
    CHECK(r.config->connector.log_path == (tmp.path / "logs").string());
    REQUIRE(r.config->tunnels.size() == 1);
    CHECK(r.config->tunnels[0].keyfile == (tmp.path / "configs/id_only").string());
}

TEST_CASE("a missing main file is one error, no config")
{
    TempDir tmp;
    LoadResult r = pytun::load_config((tmp.path / "connector.ini").string());
    CHECK_FALSE(r.ok());
    REQUIRE(r.diagnostics.size() == 1);
    CHECK(r.diagnostics[0].file == (tmp.path / "connector.ini").string());
    CHECK(r.diagnostics[0].message.find("cannot read") != std::string::npos);
}

TEST_CASE("broken files: every problem reported with file, line and key")
{
    TempDir tmp;
    install_fixture("broken", tmp.path);
    write_file(tmp.path / "configs/id_c", k_key, k_0644);

    LoadResult r = pytun::load_config((tmp.path / "connector.ini").string());
    INFO(dump(r));
    CHECK_FALSE(r.ok());
    CHECK_FALSE(r.config.has_value());

    struct Expected {
        Diagnostic::Severity sev;
        const char *file;
        int line;
        const char *key;
        const char *word;
    };
    const std::string keypath = (tmp.path / "configs/missing_key").string();
    const std::string khpath = (tmp.path / "configs/nowhere/known_hosts").string();
    const std::string idc = (tmp.path / "configs/id_c").string();
    const std::vector<Expected> expected = {
        {E, "/connector.ini", 1, "tunnel_manager_id", "missing"},
        {E, "/connector.ini", 3, "log_level", "CRITICAL"},
        {E, "/connector.ini", 4, "log_to_console", "1, yes, true, on, 0, no, false or off"},
        {E, "/connector.ini", 5, "inspection_port", "from 1 to 65535"},
        {E, "/connector.ini", 7, "smtp_security", "none, tls"},
        {E, "/connector.ini", 8, "smtp_from", "not an e-mail address"},
        {E, "/connector.ini", 9, "smtp_port", "not a number"},
        {W, "/connector.ini", 11, "logpath", "did you mean 'log_path'?"},
        {W, "/connector.ini", 13, "smtp_login", "line 12"},
        {W, "/connector.ini", 14, "keep_alive_time", "unknown key"},
        {E, "/connector.ini", 1, "smtp_to", "missing"},
        {E, "/connector.ini", 1, "http_user", "missing"},
        {E, "/connector.ini", 1, "http_password", "missing"},
        {W, "/connector.ini", 13, "smtp_login", "without smtp_password"},

        {E, "/a-missing.ini", 1, "server_host", "missing"},
        {E, "/a-missing.ini", 1, "remote_host", "missing"},
        {E, "/a-missing.ini", 1, "username", "missing"},
        {E, "/a-missing.ini", 1, "keyfile", "missing"},
        {E, "/a-missing.ini", 3, "server_port", "not a number"},
        {E, "/a-missing.ini", 4, "port", "out of range"},
        {W, "/a-missing.ini", 5, "keyfil", "did you mean 'keyfile'?"},
        {E, "/a-missing.ini", 6, "keep_alive_time", "from 1 to"},
        {W, "/a-missing.ini", 1, "server_key", "refused"},

        {E, "/b-dup.ini", 2, "tunnel_name", "a-missing.ini:2"},
        {E, "/b-dup.ini", 7, "keyfile", keypath.c_str()},
        {E, "/b-dup.ini", 8, "server_key", khpath.c_str()},
        {E, "/b-dup.ini", 9, "log_level", "not a log level"},

        {E, "/c-same-port.ini", 4, "port", "b-dup.ini:4"},
        {W, "/c-same-port.ini", 7, "keyfile", "can be read by every user"},
        {E, "/c-same-port.ini", 9, "log_to_console", "not a boolean"},

        {W, "/d-nosection.ini", 1, "", "unknown section"},
        {E, "/d-nosection.ini", 0, "", "no [tunnel] section"},

        {E, "/e-syntax.ini", 2, "", "key = value"},
        {E, "/e-syntax.ini", 3, "", "malformed section header"},
        // The garbage lines carried no keys, so the required ones are missing too.
        {E, "/e-syntax.ini", 1, "server_host", "missing"},
        {E, "/e-syntax.ini", 1, "remote_host", "missing"},
        {E, "/e-syntax.ini", 1, "username", "missing"},
        {E, "/e-syntax.ini", 1, "keyfile", "missing"},
        {W, "/e-syntax.ini", 1, "server_key", "ssh-keyscan -p 22 HOST"},
    };
    for (const Expected &x : expected) {
        CAPTURE(x.file);
        CAPTURE(x.line);
        CAPTURE(x.key);
        CAPTURE(x.word);
        CHECK(count(r, x.sev, x.file, x.line, x.key, x.word) == 1);
    }
    // Nothing else: the subdirectory-free dir and the exact list above.
    CHECK(r.diagnostics.size() == expected.size());
    // The advice names the file and keeps the group (ours) that may read it.
    CHECK(count(r, W, "/c-same-port.ini", 7, "keyfile", "run chmod 640 " + idc) == 1);
    CHECK(count(r, W, "/c-same-port.ini", 7, "keyfile", "0644") == 1);
}

TEST_CASE("file permissions: private key and password file")
{
    TempDir tmp;
    install_fixture("original", tmp.path);
    write_file(tmp.path / "configs/keys/id_ldap", k_key, k_0644);
    write_file(tmp.path / "keys/id_ssh", k_key);
    fs::permissions(tmp.path / "connector.ini", k_0644);

    LoadResult r = pytun::load_config((tmp.path / "connector.ini").string());
    INFO(dump(r));
    REQUIRE(r.ok()); // warnings only
    const std::string main = (tmp.path / "connector.ini").string();
    // The first secret in the file is inspection_token on line 10.
    CHECK(count(r, W, "/connector.ini", 10, "inspection_token", "chmod 640 " + main) == 1);
    // id_ldap is used by two tunnels: one warning each.
    CHECK(count(r, W, "/10-ldap.ini", 10, "keyfile", "chmod 640") == 1);
    CHECK(count(r, W, "/30-defaults.ini", 5, "keyfile", "chmod 640") == 1);
    CHECK(r.diagnostics.size() == 3);

    fs::permissions(tmp.path / "connector.ini", fs::perms::owner_read | fs::perms::owner_write);
    fs::permissions(tmp.path / "configs/keys/id_ldap", fs::perms::owner_read | fs::perms::owner_write);
    r = pytun::load_config((tmp.path / "connector.ini").string());
    CHECK(r.diagnostics.empty());
}

TEST_CASE("keyfile and server_key: what would fail at connect time is an error, with the fix")
{
    TempDir tmp;
    write_file(tmp.path / "key", k_key);
    write_file(tmp.path / "key.pub", k_public_key);
    write_file(tmp.path / "encrypted", k_encrypted_key);
    write_file(tmp.path / "junk", "this is not a key\n");
    write_file(tmp.path / "kh", k_known_hosts_h);
    write_file(tmp.path / "other_kh", "[bastion.example.com]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFixture\n");
    write_file(tmp.path / "nothing", "# no entries\n\n");
    write_file(tmp.path / "empty", "");
    // One tunnel per case, seven lines each from line 3: keyfile on 6, 13, 20, ..., server_key on 7, 14, ...
    std::string text = "[pytun]\ntunnel_manager_id = \"x\"\n";
    int port = 4000;
    for (auto [key, known_hosts] : std::vector<std::pair<std::string, std::string>>{
             {"key.pub", "kh"}, {"encrypted", "kh"}, {"junk", "kh"},
             {"key", "key.pub"}, {"key", "key"}, {"key", "nothing"}, {"key", "other_kh"}, {"empty", "empty"}}) {
        text += "[[tunnel]]\nserver_host = \"h\"\nport = " + std::to_string(port++) +
                "\nkeyfile = \"" + key + "\"\nserver_key = \"" + known_hosts +
                "\"\nremote_host = \"r\"\nusername = \"u\"\n";
    }
    LoadResult r = pytun::load_config_from_string(text, "toml", tmp.path.string());
    INFO(dump(r));
    CHECK_FALSE(r.ok());
    const std::string dir = tmp.path.string();
    CHECK(count(r, E, "<string>", 6, "keyfile", "holds a public key; keyfile must name the private key") == 1);
    CHECK(count(r, E, "<string>", 13, "keyfile", "is encrypted with a passphrase") == 1);
    for (const Diagnostic &d : r.diagnostics)
        if (d.line == 13) {
            // There is no passphrase setting: the fix is an unencrypted copy.
            CHECK(d.message.find("ssh-keygen -p -N '' -f " + dir + "/encrypted.pytun") != std::string::npos);
            CHECK(d.message.find("key_passphrase") == std::string::npos);
            CHECK(d.message.find("give the passphrase") == std::string::npos);
        }
    CHECK(count(r, E, "<string>", 20, "keyfile", "is not a private key") == 1);
    CHECK(count(r, E, "<string>", 28, "server_key", "bare public key (a .pub file)") == 1);
    CHECK(count(r, E, "<string>", 28, "server_key", "write 'h ' before the key") == 1);
    CHECK(count(r, E, "<string>", 35, "server_key", "is a private key, not a known_hosts file") == 1);
    CHECK(count(r, E, "<string>", 42, "server_key", "has no known_hosts lines") == 1);
    CHECK(count(r, W, "<string>", 49, "server_key", "has no key for h, so the bastion's host key will be refused") ==
          1);
    CHECK(count(r, W, "<string>", 49, "server_key", "ssh-keyscan -p 22 h >> " + dir + "/other_kh") == 1);
    // Empty files (procfs files look empty too, and are not read: they may block).
    CHECK(count(r, E, "<string>", 55, "keyfile", dir + "/empty is empty") == 1);
    CHECK(count(r, E, "<string>", 56, "server_key", dir + "/empty is empty") == 1);
    for (const Diagnostic &d : r.diagnostics) // a key's content never ends up in a message
        CHECK(d.message.find("b3BlbnNzaC1rZXktdjEAAAAA") == std::string::npos);
}

TEST_CASE("file permissions: the service's group may read; others and other groups get advice that keeps it")
{
    TempDir tmp;
    write_file(tmp.path / "configs/kh", k_known_hosts_h);
    write_file(tmp.path / "configs/t.ini",
               "[tunnel]\nserver_host = h\nremote_host = r\nusername = u\nkeyfile = key\nserver_key = kh\n");
    const fs::path k = tmp.path / "configs/key";
    write_file(k, k_key);
    auto load = [&] { return pytun::load_config_from_string("[pytun]\ntunnel_manager_id = x\n", "ini", tmp.path.string()); };

    // root:pytun 0640 as docs/service.md says, here with this process's group: fine.
    fs::permissions(k, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read);
    LoadResult r = load();
    INFO(dump(r));
    CHECK(r.diagnostics.empty());

    fs::permissions(k, fs::perms::group_write, fs::perm_options::add);
    r = load();
    CHECK(count(r, W, "/t.ini", 5, "keyfile", "can be changed by group") == 1);
    CHECK(count(r, W, "/t.ini", 5, "keyfile", "(mode 0660): run chmod 640 " + k.string()) == 1);

    fs::permissions(k, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read | fs::perms::others_read);
    r = load();
    CHECK(count(r, W, "/t.ini", 5, "keyfile", "can be read by every user (mode 0644): run chmod 640") == 1);

    // A group that is not the service's: only root can hand the file to one here.
    if (::geteuid() == 0 && ::chown(k.c_str(), 0, 65534) == 0) {
        fs::permissions(k, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read);
        r = load();
        CHECK(count(r, W, "/t.ini", 5, "keyfile", "which is not the service's (mode 0640): run chgrp ") == 1);
        CHECK(count(r, W, "/t.ini", 5, "keyfile", " && chmod 640 " + k.string()) == 1);
    }
}

TEST_CASE("~ in paths is the home of the user pytun runs as, as in the original")
{
    TempDir tmp;
    const fs::path home = tmp.path / "home";
    write_file(home / ".ssh/id_rsa", k_key);
    write_file(home / ".ssh/known_hosts", k_known_hosts_h);
    fs::create_directories(tmp.path / "configs");
    write_file(tmp.path / "configs/t.ini", "[tunnel]\nserver_host = h\nremote_host = r\nusername = u\n"
                                           "keyfile = ~/.ssh/id_rsa\nserver_key = ~/.ssh/known_hosts\n");
    const char *old_home = std::getenv("HOME");
    const std::string saved = old_home ? old_home : "";
    ::setenv("HOME", home.c_str(), 1);
    LoadResult r = pytun::load_config_from_string("[pytun]\ntunnel_manager_id = x\nlog_path = ~/logs\n", "ini",
                                                  tmp.path.string());
    if (old_home)
        ::setenv("HOME", saved.c_str(), 1);
    else
        ::unsetenv("HOME");
    INFO(dump(r));
    REQUIRE(r.ok());
    CHECK(r.config->connector.log_path == (home / "logs").string());
    CHECK(r.config->tunnels.at(0).keyfile == (home / ".ssh/id_rsa").string());
    CHECK(r.config->tunnels.at(0).server_key == (home / ".ssh/known_hosts").string());

    using pytun::config::expand_home;
    CHECK(expand_home("~root/x") == "/root/x");
    CHECK(expand_home("~no-such-user-xyz/x") == "~no-such-user-xyz/x"); // as shells and Python leave it
    CHECK(expand_home("a/~/b") == "a/~/b");
}

TEST_CASE("a file full of garbage: 20 problems shown, then how many more there were")
{
    TempDir tmp;
    std::string text = "[pytun]\ntunnel_manager_id = x\n";
    for (int i = 0; i < 50; ++i)
        text += "garbage line without an equals sign\n";
    LoadResult r = pytun::load_config_from_string(text, "ini", tmp.path.string());
    CHECK_FALSE(r.ok());
    INFO(dump(r));
    // 50 syntax errors and tunnel_dirs (./configs is missing): 51.
    REQUIRE(r.diagnostics.size() == 21);
    CHECK(r.diagnostics[19].line == 22);
    CHECK(r.diagnostics[20].severity == E);
    CHECK(r.diagnostics[20].message.find("31 more problems in this file not shown (31 of them errors)") !=
          std::string::npos);
}

TEST_CASE("check_runtime (pytun --check): a log_path that cannot be made is an error")
{
    TempDir tmp;
    write_file(tmp.path / "file", "x\n");
    fs::create_directory(tmp.path / "configs");
    for (const std::string &log_path : {std::string("file"), std::string("file/logs")}) {
        CAPTURE(log_path);
        const std::string text = "[pytun]\ntunnel_manager_id = x\nlog_path = " + log_path + "\n";
        LoadResult plain = pytun::load_config_from_string(text, "ini", tmp.path.string());
        CHECK(plain.ok()); // start-up leaves this to the logger
        pytun::LoadOptions deep;
        deep.check_runtime = true;
        write_file(tmp.path / "connector.ini", text);
        LoadResult r = pytun::load_config((tmp.path / "connector.ini").string(), deep);
        INFO(dump(r));
        CHECK_FALSE(r.ok());
        CHECK(count(r, E, "/connector.ini", 3, "log_path", log_path == "file" ? "is not a directory" : "cannot be created") == 1);
        CHECK(count(r, E, "/connector.ini", 3, "log_path", "install -d -o ") == 1);
    }
    if (::geteuid() != 0) { // root may write anywhere
        fs::create_directory(tmp.path / "ro");
        fs::permissions(tmp.path / "ro", fs::perms::owner_read | fs::perms::owner_exec);
        write_file(tmp.path / "connector.ini", "[pytun]\ntunnel_manager_id = x\nlog_path = ro\n");
        pytun::LoadOptions deep;
        deep.check_runtime = true;
        LoadResult r = pytun::load_config((tmp.path / "connector.ini").string(), deep);
        CHECK(count(r, E, "/connector.ini", 3, "log_path", "is not writable by user") == 1);
    }
}

TEST_CASE("tunnel_dirs: absent is an error, empty is a warning")
{
    TempDir tmp;
    LoadResult r = pytun::load_config_from_string("[pytun]\ntunnel_manager_id = x\ntunnel_dirs = nope\n", "ini",
                                                  tmp.path.string());
    INFO(dump(r));
    CHECK_FALSE(r.ok());
    CHECK(count(r, E, "<string>", 3, "tunnel_dirs", (tmp.path / "nope").string()) == 1);

    // Default tunnel_dirs is "configs" next to the main file.
    r = pytun::load_config_from_string("[pytun]\ntunnel_manager_id = x\n", "ini", tmp.path.string());
    CHECK(count(r, E, "<string>", 1, "tunnel_dirs", (tmp.path / "configs").string()) == 1);

    fs::create_directory(tmp.path / "configs");
    write_file(tmp.path / "configs/readme.txt", "no tunnels here\n");
    r = pytun::load_config_from_string("[pytun]\ntunnel_manager_id = x\n", "ini", tmp.path.string());
    REQUIRE(r.ok());
    CHECK(count(r, W, "<string>", 1, "tunnel_dirs", "no tunnels configured") == 1);
    CHECK(r.diagnostics.size() == 1);
    CHECK(r.diagnostics[0].to_string().starts_with("warning: <string>:1: tunnel_dirs: no tunnels configured"));
}

TEST_CASE("alert rate limits and reminder interval: defaults, keys, and what the alerter gets")
{
    TempDir tmp;
    fs::create_directory(tmp.path / "configs");
    const std::string head = "[pytun]\ntunnel_manager_id = x\n";
    LoadResult r = pytun::load_config_from_string(head, "ini", tmp.path.string());
    REQUIRE(r.config);
    CHECK(r.config->connector.smtp_rate_limit == std::chrono::seconds(600));
    CHECK(r.config->connector.http_rate_limit == std::chrono::seconds(60));
    CHECK(r.config->connector.alert_reminder_interval == std::chrono::seconds(600));

    r = pytun::load_config_from_string(head + "smtp_rate_limit = 0\nhttp_rate_limit = 5\nalert_reminder_interval = 3600\n",
                                       "ini", tmp.path.string());
    INFO(dump(r));
    REQUIRE(r.ok());
    pytun::AlerterOptions o(r.config->connector);
    CHECK(o.email.rate_limit == std::chrono::milliseconds(0));
    CHECK(o.webhook.rate_limit == std::chrono::seconds(5));
    CHECK(o.reminder_interval == std::chrono::hours(1));

    r = pytun::load_config_from_string(head + "alert_reminder_interval = 0\nhttp_rate_limit = often\n", "ini",
                                       tmp.path.string());
    INFO(dump(r));
    CHECK_FALSE(r.ok());
    CHECK(count(r, E, "<string>", 3, "alert_reminder_interval", "from 1 to 604800") == 1);
    CHECK(count(r, E, "<string>", 4, "http_rate_limit", "'often' is not a number") == 1);
}

TEST_CASE("TOML table headers that do not start with a key are a syntax error, not a crash")
{
    // toml++ 3.3 asserts on these (marzer/tomlplusplus#301); found by fuzz_config.
    TempDir tmp;
    for (const char *text : {"[pytun]\ntunnel_manager_id = \"x\"\n[#onfig-connector]\n", "[[[1]]]\n", "a = 1\n[[=\n"}) {
        LoadResult r = pytun::load_config_from_string(text, "toml", tmp.path.string());
        INFO(text, dump(r));
        CHECK_FALSE(r.ok());
        REQUIRE_FALSE(r.diagnostics.empty());
        CHECK(r.diagnostics[0].to_string().find("fix the TOML syntax") != std::string::npos);
    }
}

TEST_CASE("TOML: a non-ASCII character where whitespace may be is text or a syntax error, never undefined")
{
    // toml++ 3.3 reaches __builtin_unreachable() for these (marzer/tomlplusplus#190); found by fuzz_config.
    // UBSan (the sanitizer CI run) stops on it; other builds may read any value or crash.
    TempDir tmp;
    // Valid TOML: a line-ending backslash in a """ string skips the newline and the whitespace after it.
    LoadResult r = pytun::load_config_from_string("[pytun]\ntunnel_manager_id = \"\"\"\\\n  \u00a7 1\"\"\"\n", "toml",
                                                  tmp.path.string());
    INFO(dump(r));
    REQUIRE(r.config);
    CHECK(r.config->connector.tunnel_manager_id == "\u00a7 1");
    for (const char *text : {"[pytun]\n  t=701\u0409nel\n", "a = 1 \u00e9\n", "a = 1\u3041\n", "a = 1\ufc10\n"}) {
        r = pytun::load_config_from_string(text, "toml", tmp.path.string());
        INFO(text, dump(r));
        CHECK_FALSE(r.ok());
        REQUIRE_FALSE(r.diagnostics.empty());
        CHECK(r.diagnostics[0].to_string().find("fix the TOML syntax") != std::string::npos);
    }
}

TEST_CASE("main file structure errors")
{
    TempDir tmp;
    LoadResult r = pytun::load_config_from_string("tunnel_manager_id = x\n[other]\na = b\n", "ini",
                                                  tmp.path.string());
    INFO(dump(r));
    CHECK_FALSE(r.ok());
    CHECK(count(r, E, "<string>", 1, "tunnel_manager_id", "before any section") == 1);
    CHECK(count(r, W, "<string>", 2, "", "unknown section [other]") == 1);
    CHECK(count(r, E, "<string>", 0, "", "no [pytun] section") == 1);
    CHECK(r.diagnostics.size() == 3);
    for (const Diagnostic &d : r.diagnostics) {
        if (d.line == 0)
            CHECK(d.to_string() == "<string>: " + d.message);
    }

    r = pytun::load_config_from_string("", "yaml", tmp.path.string());
    CHECK_FALSE(r.ok());
    CHECK(r.diagnostics.at(0).message.find("ini") != std::string::npos);
}

TEST_CASE("main section checks: e-mail, webhook, signature, token")
{
    TempDir tmp;
    fs::create_directory(tmp.path / "configs");
    write_file(tmp.path / "configs/t.ini",
               "[tunnel]\nserver_host=h\nremote_host=r\nusername=u\nkeyfile=k\nserver_key=kh\n");
    write_file(tmp.path / "configs/k", k_key);
    write_file(tmp.path / "configs/kh", k_known_hosts_h);
    const std::string text = "[pytun]\n"
                             "tunnel_manager_id = x\n"              // 2
                             "smtp_hostname = mail\n"               // 3
                             "smtp_login = bob\n"                   // 4
                             "smtp_to = ok@example.com, bad@@x\n"   // 5
                             "http_url = ftp://x\n"                 // 6
                             "http_user = u\n"                      // 7
                             "http_password = p\n"                  // 8
                             "signature = abc\n"                    // 9
                             "inspection_localhost_only = no\n"     // 10
                             "smtp_ca_file = ca.pem\n"              // 11
                             "grace_period_ms = -1\n"               // 12
                             "smtp_verify_tls = nope\n";            // 13
    LoadResult r = pytun::load_config_from_string(text, "ini", tmp.path.string());
    INFO(dump(r));
    CHECK_FALSE(r.ok());
    CHECK(count(r, E, "<string>", 4, "smtp_from", "'bob' is not an e-mail address") == 1);
    CHECK(count(r, W, "<string>", 4, "smtp_login", "without smtp_password") == 1);
    CHECK(count(r, E, "<string>", 5, "smtp_to", "'bad@@x'") == 1);
    CHECK(count(r, E, "<string>", 6, "http_url", "https://") == 1);
    CHECK(count(r, E, "<string>", 1, "mac_address_pub_key", "signature") == 1);
    CHECK(count(r, W, "<string>", 10, "inspection_localhost_only", "inspection_token") == 1);
    CHECK(count(r, E, "<string>", 11, "smtp_ca_file", (tmp.path / "ca.pem").string()) == 1);
    CHECK(count(r, E, "<string>", 12, "grace_period_ms", "from 0 to 3600000") == 1);
    CHECK(count(r, E, "<string>", 13, "smtp_verify_tls", "not a boolean") == 1);
    CHECK(r.diagnostics.size() == 9);
}

TEST_CASE("TOML: types are checked and the fix is named")
{
    TempDir tmp;
    write_file(tmp.path / "k", k_key);
    write_file(tmp.path / "kh", k_known_hosts_h);
    const std::string text = "[pytun]\n"                         // 1
                             "tunnel_manager_id = \"x\"\n"         // 2
                             "inspection_port = \"9999\"\n"        // 3
                             "log_to_console = \"yes\"\n"          // 4
                             "log_path = 5\n"                      // 5
                             "\n"                                  // 6
                             "[[tunnel]]\n"                        // 7
                             "server_host = \"h\"\n"               // 8
                             "remote_host = \"r\"\n"               // 9
                             "username = \"u\"\n"                  // 10
                             "keyfile = \"k\"\n"                   // 11
                             "server_key = \"kh\"\n"               // 12
                             "keep_alive_time = 1.5\n"             // 13
                             "keyfiel = \"k\"\n"                   // 14
                             "\n"                                  // 15
                             "[[tunnel]]\n"                        // 16
                             "tunnel_name = \"tunnel-1\"\n"        // 17
                             "server_host = \"H\"\n"               // 18
                             "port = 4000\n"                       // 19
                             "remote_host = \"r\"\n"
                             "username = \"u\"\n"
                             "keyfile = \"k\"\n"
                             "server_key = \"kh\"\n"
                             "\n"
                             "[extra]\n";                          // 25
    LoadResult r = pytun::load_config_from_string(text, "toml", tmp.path.string());
    INFO(dump(r));
    CHECK_FALSE(r.ok());
    CHECK(count(r, E, "<string>", 3, "inspection_port", "without quotes") == 1);
    CHECK(count(r, E, "<string>", 4, "log_to_console", "true or") == 1);
    CHECK(count(r, E, "<string>", 5, "log_path", "must be a string") == 1);
    CHECK(count(r, E, "<string>", 13, "keep_alive_time", "whole number") == 1);
    CHECK(count(r, W, "<string>", 14, "keyfiel", "did you mean 'keyfile'?") == 1);
    CHECK(count(r, E, "<string>", 17, "tunnel_name", "<string>:7") == 1);
    CHECK(count(r, E, "<string>", 19, "port", "bind a port only once") == 1);
    CHECK(count(r, W, "<string>", 25, "extra", "unknown") == 1);
    CHECK(r.diagnostics.size() == 8);

    r = pytun::load_config_from_string("[pytun]\nx = \n", "toml", tmp.path.string());
    CHECK_FALSE(r.ok());
    REQUIRE(r.diagnostics.size() == 1);
    CHECK(r.diagnostics[0].line == 2);
    CHECK(r.diagnostics[0].message.find("TOML") != std::string::npos);

    r = pytun::load_config_from_string("[pytun]\ntunnel_manager_id = \"x\"\n", "toml", tmp.path.string());
    REQUIRE(r.ok());
    CHECK(count(r, W, "<string>", 1, "", "no tunnels configured") == 1);
    CHECK(r.config->connector.log_path == (tmp.path / "logs").string());
}

TEST_CASE("INI values: comments, quotes, separators")
{
    using pytun::config::clean_ini_value;
    CHECK(clean_ini_value(" 10389 # Port to listen on SSH server") == "10389");
    CHECK(clean_ini_value("10389 ; comment") == "10389");
    CHECK(clean_ini_value("\"Test Tunnel\"") == "Test Tunnel");
    CHECK(clean_ini_value("'single'") == "single");
    CHECK(clean_ini_value("\"Test Tunnel\" # comment") == "Test Tunnel");
    CHECK(clean_ini_value("\"pa #ss\"") == "pa #ss"); // a quoted value may hold " #"
    CHECK(clean_ini_value("\"mismatched'") == "\"mismatched'");
    CHECK(clean_ini_value("http://x/#frag") == "http://x/#frag"); // no whitespace before '#'
    CHECK(clean_ini_value("a\"b\"") == "a\"b\"");
    CHECK(clean_ini_value("\"\"") == "");
    CHECK(clean_ini_value("   ") == "");

    pytun::config::Diagnostics diag;
    auto sections = pytun::config::parse_ini("\xEF\xBB\xBF[Tunnel]\r\nKey: v: w\r\n a = b=c \n; x\n# y\n", "f", diag);
    REQUIRE(sections.size() == 1);
    CHECK(sections[0].name == "tunnel");
    REQUIRE(sections[0].entries.size() == 2);
    CHECK(sections[0].entries[0].key == "key");
    CHECK(sections[0].entries[0].text == "v: w");
    CHECK(sections[0].entries[1].key == "a");
    CHECK(sections[0].entries[1].text == "b=c");
    CHECK(sections[0].entries[1].line == 3);
    CHECK(diag.take().empty());
}

TEST_CASE("booleans accept the listed words in any case, nothing else")
{
    TempDir tmp;
    for (const char *w : {"1", "yes", "TRUE", "On"}) {
        auto r = pytun::load_config_from_string(std::string("[pytun]\ntunnel_manager_id=x\ntunnel_dirs=.\n"
                                                            "log_to_console=") + w + "\n", "ini", tmp.path.string());
        CAPTURE(w);
        REQUIRE(r.ok());
        CHECK(r.config->connector.log_to_console == true);
    }
    for (const char *w : {"0", "No", "false", "OFF"}) {
        auto r = pytun::load_config_from_string(std::string("[pytun]\ntunnel_manager_id=x\ntunnel_dirs=.\n"
                                                            "log_to_console=") + w + "\n", "ini", tmp.path.string());
        CAPTURE(w);
        REQUIRE(r.ok());
        CHECK(r.config->connector.log_to_console == false);
    }
    for (const char *w : {"", "y", "2", "False!", "enabled"}) {
        auto r = pytun::load_config_from_string(std::string("[pytun]\ntunnel_manager_id=x\ntunnel_dirs=.\n"
                                                            "log_to_console=") + w + "\n", "ini", tmp.path.string());
        CAPTURE(w);
        CHECK_FALSE(r.ok());
        CHECK(count(r, E, "<string>", 4, "log_to_console", "not a boolean") == 1);
    }
}

TEST_CASE("helpers: e-mail syntax and edit distance")
{
    using pytun::config::edit_distance;
    using pytun::config::valid_email;
    CHECK(valid_email("ops@example.com"));
    CHECK(valid_email("first.last+tag@sub.example.co.uk"));
    CHECK(valid_email("root@localhost"));
    CHECK_FALSE(valid_email("plain"));
    CHECK_FALSE(valid_email("@example.com"));
    CHECK_FALSE(valid_email("a@"));
    CHECK_FALSE(valid_email("a b@example.com"));
    CHECK_FALSE(valid_email("a@-x.com"));
    CHECK_FALSE(valid_email("a@x..com"));
    CHECK_FALSE(valid_email(".a@x.com"));
    CHECK(edit_distance("keyfil", "keyfile") == 1);
    CHECK(edit_distance("", "abc") == 3);
    CHECK(edit_distance("kitten", "sitting") == 3);
}

namespace {

/// A main file with one tunnel directory holding `files` (name -> text), each
/// tunnel file with a key and known_hosts next to it.
LoadResult load_tunnel_files(const TempDir &tmp, const std::vector<std::pair<std::string, std::string>> &files,
                             fs::perms mode = fs::perms::owner_read | fs::perms::owner_write)
{
    write_file(tmp.path / "connector.ini", "[pytun]\ntunnel_manager_id = x\ntunnel_dirs = t\n");
    write_file(tmp.path / "t/k", k_key);
    write_file(tmp.path / "t/kh", "bastion ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFixtureHostKeyNotReal0000000000000000000\n");
    for (const auto &[name, text] : files)
        write_file(tmp.path / "t" / name, text, mode);
    return pytun::load_config((tmp.path / "connector.ini").string());
}

const std::string k_connection = "[tunnel]\n"             // 1
                                 "server_host = bastion\n" // 2
                                 "username = u\n"          // 3
                                 "keyfile = k\n"           // 4
                                 "server_key = kh\n";      // 5

} // namespace

TEST_CASE("min_sessions: at most max_sessions, and only where pytun opens channels")
{
    TempDir tmp;
    LoadResult r = load_tunnel_files(
        tmp, {{"a.ini", k_connection + "dynamic_forward = 1080\n"            // 6
                                       "max_sessions = 4\n"                  // 7
                                       "min_sessions = 6\n"},                // 8
              {"b.ini", k_connection + "remote_forward = 7000:ldap:389\n"    // 6: nothing opens channels
                                       "min_sessions = 3\n"},                // 7
              {"c.ini", k_connection + "local_forward = 8080:web:80\n"       // 6
                                       "min_sessions = 0\n"}});              // 7
    INFO(dump(r));
    CHECK_FALSE(r.ok());
    CHECK(count(r, E, "/a.ini", 8, "min_sessions", "more than max_sessions (4)") == 1);
    CHECK(count(r, W, "/b.ini", 7, "min_sessions", "has no effect") == 1);
    CHECK(count(r, E, "/c.ini", 7, "min_sessions", "from 1 to 64") == 1);
    CHECK(r.diagnostics.size() == 3);
}

TEST_CASE("forwards in an INI tunnel file: ssh's forms, several over one connection, in the order written")
{
    TempDir tmp;
    LoadResult r = load_tunnel_files(tmp, {{"db.ini", k_connection +
                                                          "local_forward = 5432:db.internal:5432, "
                                                          "[::1]:6379:[fd00::7]:6379\n"       // 6
                                                          "dynamic_forward = 1080\n"          // 7
                                                          "remote_forward = 10389:ldap:389 "
                                                          "*:1081   # reverse SOCKS\n"         // 8
                                                          "local_forward = 8080:web:80\n"     // 9: adds
                                                          "socks_allow = 10.0.0.0/8:389, "
                                                          "*.corp.example:443\n"              // 10
                                                          "socks_user = alice\n"
                                                          "socks_password = \"s3cret pass\"\n"
                                                          "max_sessions = 4\n"
                                                          "min_sessions = 2\n"
                                                          "open_timeout = 3\n"}});
    INFO(dump(r));
    REQUIRE(r.ok());
    CHECK(r.diagnostics.empty()); // no remote_host, and not asked for: the file declares forwards
    const pytun::TunnelConfig &t = r.config->tunnels.at(0);
    CHECK(t.remote_host.empty());
    REQUIRE(t.forwards.size() == 6);
    std::vector<std::string> described;
    for (const auto &f : t.forwards)
        described.push_back(pytun::describe(f));
    CHECK(described == std::vector<std::string>{"L 127.0.0.1:5432 -> db.internal:5432", "L [::1]:6379 -> [fd00::7]:6379",
                                                "D 127.0.0.1:1080 (SOCKS)", "R localhost:10389 -> ldap:389",
                                                "R 0.0.0.0:1081 (SOCKS)", "L 127.0.0.1:8080 -> web:80"});
    const std::vector<std::string> allow = {"10.0.0.0/8:389", "*.corp.example:443"};
    CHECK(t.socks_allow == allow);
    const auto &d = std::get<pytun::DynamicForward>(t.forwards[2]);
    CHECK(d.allow == allow);
    CHECK(d.username == "alice");
    CHECK(d.password == "s3cret pass");
    CHECK(std::get<pytun::RemoteDynamicForward>(t.forwards[4]).allow == allow);

    const pytun::TunnelOptions o = pytun::to_tunnel_options(t);
    CHECK(o.forwards == t.forwards);
    CHECK(o.remote_host.empty());
    CHECK(o.max_sessions == 4);
    CHECK(o.min_sessions == 2);
    CHECK(o.open_timeout == std::chrono::seconds(3));
    CHECK(pytun::all_forwards(o).size() == 6); // no classic reverse tunnel in front

    SUBCASE("defaults")
    {
        TempDir other;
        LoadResult d2 = load_tunnel_files(other, {{"s.ini", k_connection + "dynamic_forward = 1080\n"}});
        REQUIRE(d2.ok());
        const auto &c = d2.config->tunnels.at(0);
        CHECK(c.max_sessions == 8);
        CHECK(c.min_sessions == 1);
        CHECK(pytun::to_tunnel_options(c).min_sessions == 1);
        CHECK(c.open_timeout == std::chrono::seconds(10));
        CHECK(pytun::to_tunnel_options(c).open_timeout == std::chrono::seconds(10));
    }
    SUBCASE("socks_allow without a SOCKS forward warns that it has no effect")
    {
        TempDir other;
        LoadResult l = load_tunnel_files(other, {{"l.ini", k_connection + "local_forward = 5432:db:5432\n" // 6
                                                               "socks_allow = 10.0.0.0/8\n"}});        // 7
        INFO(dump(l));
        REQUIRE(l.ok());
        CHECK(count(l, W, "/l.ini", 7, "socks_allow", "has no effect") == 1);
        CHECK(l.diagnostics.size() == 1);
    }
}

TEST_CASE("an existing tunnel file loads exactly as before, and may add forwards to its reverse tunnel")
{
    TempDir tmp;
    const std::string classic = k_connection + "remote_host = ldap.local\nremote_port = 389\n";
    LoadResult r = load_tunnel_files(tmp, {{"both.ini", classic + "port = 10390\nlocal_forward = 5432:db:5432\n"},
                                           {"ldap.ini", classic + "port = 10389\n"}});
    INFO(dump(r));
    REQUIRE(r.ok());
    CHECK(r.diagnostics.empty());
    const auto &both = r.config->tunnels.at(0);
    const auto &ldap = r.config->tunnels.at(1);
    CHECK(ldap.forwards.empty());
    const pytun::TunnelOptions o = pytun::to_tunnel_options(ldap);
    CHECK(o.forwards.empty());
    CHECK(o.remote_host == "ldap.local");
    CHECK(o.remote_port == 389);
    CHECK(o.listen_port == 10389);
    CHECK(o.max_sessions == pytun::TunnelOptions{}.max_sessions);
    CHECK(o.open_timeout == pytun::TunnelOptions{}.open_timeout);
    auto all = pytun::all_forwards(pytun::to_tunnel_options(both));
    REQUIRE(all.size() == 2);
    CHECK(pytun::describe(all[0]) == "R localhost:10390 -> ldap.local:389");
    CHECK(pytun::describe(all[1]) == "L 127.0.0.1:5432 -> db:5432");

    // The classic port and a remote_forward of another tunnel on one bastion port.
    TempDir other;
    r = load_tunnel_files(other, {{"a.ini", classic + "port = 10389\n"},
                                  {"b.ini", k_connection + "remote_forward = 10389:x:1\n"}});
    CHECK(count(r, E, "/b.ini", 6, "remote_forward", "a.ini:8") == 1);
}

TEST_CASE("forward keys: every mistake named with file, line and key")
{
    TempDir tmp;
    LoadResult r = load_tunnel_files(
        tmp, {{"a.ini", k_connection +
                            "local_forward = 8080:db\n"                      // 6
                            "dynamic_forward = 1080:x:1\n"                   // 7
                            "remote_forward = 1081\n"                        // 8: reverse SOCKS, no socks_allow
                            "remote_forward = 99999:h:1\n"                   // 9
                            "local_forward = [::1:80:h:1\n"                  // 10
                            "socks_user = bob\n"                             // 11: no password
                            "max_sessions = 0\n"                             // 12
                            "open_timeout = soon\n"                          // 13
                            "port = 4001\n"},                                // 14: ignored without remote_host
              {"b.ini", k_connection +
                            "dynamic_forward = 1080, 1080\n"                 // 6: twice
                            "socks_allow = 10.0.0.0/33, 10.0.0.0/8:90-80\n"  // 7
                            "local_forward = 0.0.0.0:5000:h:1\n"             // 8
                            "local_forward = 127.0.0.1:5000:h:2\n"           // 9: inside 0.0.0.0:5000
                            "remote_forward = 7000:h:1\n"},                  // 10
              {"c.ini", k_connection + "remote_forward = 7000:other:1\n"     // 6: b.ini's bastion port
                                       "dynamic_forward = 1080\n"}});        // 7: b.ini's local port
    INFO(dump(r));
    CHECK_FALSE(r.ok());
    struct Expected {
        Diagnostic::Severity sev;
        const char *file;
        int line;
        const char *key;
        const char *word;
    };
    const std::vector<Expected> expected = {
        {E, "/a.ini", 6, "local_forward", "'8080:db': expected [BIND:]PORT:HOST:HOSTPORT"},
        {E, "/a.ini", 7, "dynamic_forward", "'1080:x:1': expected [BIND:]PORT"},
        {E, "/a.ini", 8, "remote_forward", "'1081' has no HOST:HOSTPORT, so it is reverse SOCKS"},
        {E, "/a.ini", 9, "remote_forward", "listen port '99999' is not a port"},
        {E, "/a.ini", 10, "local_forward", "'[' without ']'"},
        {E, "/a.ini", 11, "socks_user", "go together"},
        {W, "/a.ini", 11, "socks_user", "no dynamic_forward"},
        {E, "/a.ini", 12, "max_sessions", "from 1 to 64"},
        {E, "/a.ini", 13, "open_timeout", "not a number"},
        {W, "/a.ini", 14, "port", "used only with remote_host"},

        {E, "/b.ini", 6, "dynamic_forward", "127.0.0.1:1080 is also where dynamic_forward in"},
        {E, "/b.ini", 7, "socks_allow", "'10.0.0.0/33': mask must be 0-32"},
        {E, "/b.ini", 7, "socks_allow", "port range 90-80 is reversed"},
        {E, "/b.ini", 9, "local_forward", "b.ini:8 listens"},

        {E, "/c.ini", 6, "remote_forward", "port 7000 on bastion:22 is also used by the tunnel in"},
        {E, "/c.ini", 7, "dynamic_forward", "127.0.0.1:1080 is also where dynamic_forward in"},
    };
    for (const Expected &x : expected) {
        CAPTURE(x.file);
        CAPTURE(x.line);
        CAPTURE(x.key);
        CAPTURE(x.word);
        CHECK(count(r, x.sev, x.file, x.line, x.key, x.word) == 1);
    }
    CHECK(r.diagnostics.size() == expected.size());
}

TEST_CASE("socks_password is a secret: never quoted, and its file must be private")
{
    TempDir tmp;
    LoadResult r = load_tunnel_files(tmp,
                                     {{"s.ini", k_connection + "dynamic_forward = 1080\nsocks_user = u\n"
                                                               "socks_password = " + std::string(300, 'P') + "\n"}},
                                     k_0644);
    INFO(dump(r));
    CHECK_FALSE(r.ok());
    CHECK(count(r, E, "/s.ini", 8, "socks_password", "longer than 255 bytes") == 1);
    CHECK(count(r, W, "/s.ini", 8, "socks_password", "chmod 640") == 1);
    CHECK(dump(r).find("PPPP") == std::string::npos);

    // TOML: the main file holds it, and is checked once.
    write_file(tmp.path / "k", k_key);
    write_file(tmp.path / "kh", "b ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFixtureHostKeyNotReal0000000000000000000\n");
    write_file(tmp.path / "c.toml",
               "[pytun]\ntunnel_manager_id = \"x\"\n\n"
               "[[tunnel]]\nserver_host = \"b\"\nusername = \"u\"\nkeyfile = \"k\"\nserver_key = \"kh\"\n" // 4-8
               "dynamic_forward = [\"1080\"]\nsocks_user = \"u\"\nsocks_password = \"Socks-Pa55\"\n",      // 9-11
               k_0644);
    r = pytun::load_config((tmp.path / "c.toml").string());
    INFO(dump(r));
    REQUIRE(r.ok());
    CHECK(count(r, W, "/c.toml", 11, "socks_password", "chmod 640") == 1);
    CHECK(r.diagnostics.size() == 1);
    CHECK(std::get<pytun::DynamicForward>(r.config->tunnels.at(0).forwards.at(0)).password == "Socks-Pa55");
    CHECK(dump(r).find("Socks-Pa55") == std::string::npos);
}

TEST_CASE("forwards in TOML: arrays or strings, and wrong types say what to write")
{
    TempDir tmp;
    write_file(tmp.path / "k", k_key);
    write_file(tmp.path / "kh", "b ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFixtureHostKeyNotReal0000000000000000000\n");
    const std::string connection = "[pytun]\n"                            // 1
                                   "tunnel_manager_id = \"x\"\n"          // 2
                                   "[[tunnel]]\n"                         // 3
                                   "server_host = \"b\"\n"                // 4
                                   "username = \"u\"\n"                   // 5
                                   "keyfile = \"k\"\n"                    // 6
                                   "server_key = \"kh\"\n";               // 7
    LoadResult r = pytun::load_config_from_string(connection +
                                                      "local_forward = [\"5432:db:5432\", \"8080:web:80\"]\n" // 8
                                                      "remote_forward = \"1081\"\n"                           // 9
                                                      "socks_allow = [\"10.0.0.0/8\"]\n"                      // 10
                                                      "open_timeout = 0\n",                                   // 11
                                                  "toml", tmp.path.string());
    INFO(dump(r));
    REQUIRE(r.ok());
    const auto &t = r.config->tunnels.at(0);
    REQUIRE(t.forwards.size() == 3);
    CHECK(pytun::describe(t.forwards[1]) == "L 127.0.0.1:8080 -> web:80");
    CHECK(std::get<pytun::RemoteDynamicForward>(t.forwards[2]).allow == std::vector<std::string>{"10.0.0.0/8"});
    CHECK(t.open_timeout == std::chrono::seconds(0));

    r = pytun::load_config_from_string(connection + "local_forward = 5432\n"           // 8
                                                    "socks_allow = [1, 2]\n"           // 9
                                                    "max_sessions = \"4\"\n"           // 10
                                                    "remote_forward = [\"x:y\"]\n",    // 11
                                       "toml", tmp.path.string());
    INFO(dump(r));
    CHECK_FALSE(r.ok());
    CHECK(count(r, E, "<string>", 8, "local_forward", "write local_forward = [\"5432:db.internal:5432\"]") == 1);
    CHECK(count(r, E, "<string>", 9, "socks_allow", "array of strings") == 1);
    CHECK(count(r, E, "<string>", 10, "max_sessions", "without quotes") == 1);
    CHECK(count(r, E, "<string>", 11, "remote_forward", "'y' is not a port") == 1);
    // No forward parsed, but forward keys are there: remote_host is not demanded.
    CHECK(count(r, E, "<string>", 3, "remote_host", "missing") == 0);
    CHECK(r.diagnostics.size() == 4);
}

TEST_CASE("a VPN capture in a tunnel file: the vpn_ keys make one TransparentForward, no remote_host needed")
{
    TempDir tmp;
    LoadResult r = load_tunnel_files(tmp, {{"vpn.ini", k_connection +
                                                           "vpn_subnets = 10.0.0.0/8, fd00::/8\n"      // 6
                                                           "vpn_subnets = 198.18.1.0/24:80-90 db.corp\n" // 7: adds
                                                           "vpn_exclude = 10.1.0.0/16\n"                // 8
                                                           "vpn_auto_nets = yes\n"                      // 9
                                                           "vpn_ns_hosts = 10.0.0.53, fd00::53\n"       // 10
                                                           "vpn_to_ns = [fd00::1]:5353\n"               // 11
                                                           "vpn_method = NFT\n"                         // 12
                                                           "vpn_listen = 0.0.0.0:12345\n"               // 13
                                                           "vpn_ipv6 = false\n"                         // 14
                                                           "vpn_fail_open = on\n"},                     // 15
                                           {"plain.ini", k_connection + "tunnel_name = plain\n"
                                                                        "vpn_subnets = 0/0\n"}});
    INFO(dump(r));
    REQUIRE(r.ok());
    CHECK(r.diagnostics.empty());
    const pytun::TunnelConfig &t = r.config->tunnels.at(1);
    CHECK(t.remote_host.empty());
    REQUIRE(t.forwards.size() == 1);
    const auto &v = std::get<pytun::TransparentForward>(t.forwards[0]);
    CHECK(v.subnets == std::vector<std::string>{"10.0.0.0/8", "fd00::/8", "198.18.1.0/24:80-90", "db.corp"});
    CHECK(v.exclude == std::vector<std::string>{"10.1.0.0/16"});
    CHECK(v.auto_nets);
    CHECK(v.dns); // implied by vpn_ns_hosts
    CHECK(v.nameservers == std::vector<std::string>{"10.0.0.53", "fd00::53"});
    CHECK(v.to_ns == "[fd00::1]:5353");
    CHECK(v.method == pytun::CaptureMethod::nft);
    CHECK(v.listen_address == "0.0.0.0");
    CHECK(v.listen_port == 12345);
    CHECK_FALSE(v.ipv6);
    CHECK(v.fail_open);
    const pytun::TunnelOptions o = pytun::to_tunnel_options(t);
    REQUIRE(pytun::all_forwards(o).size() == 1); // no classic reverse tunnel in front
    CHECK(pytun::describe(pytun::all_forwards(o)[0]) ==
          "VPN 10.0.0.0/8 fd00::/8 198.18.1.0/24:80-90 db.corp -N -x 10.1.0.0/16 (DNS)");

    // pytun vpn's defaults: automatic method, loopback, port chosen, IPv6 carried, fail-closed, no DNS.
    const auto &d = std::get<pytun::TransparentForward>(r.config->tunnels.at(0).forwards.at(0));
    CHECK(d == pytun::TransparentForward{.subnets = {"0/0"}});
    // ... and its sessions kept warm for bursts, unlike a tunnel without a capture.
    CHECK(r.config->tunnels.at(0).min_sessions == pytun::TransparentForward::default_min_sessions);
    CHECK(r.config->tunnels.at(0).max_sessions == pytun::TransparentForward::default_max_sessions);

    SUBCASE("max_sessions alone below the warm default lowers min_sessions with it, without an error")
    {
        TempDir few;
        LoadResult small = load_tunnel_files(few, {{"few.ini", k_connection + "vpn_subnets = 0/0\nmax_sessions = 4\n"},
                                                   {"fwd.ini", k_connection + "tunnel_name = fwd\n"
                                                                              "local_forward = 5432:db:5432\n"}});
        INFO(dump(small));
        REQUIRE(small.ok());
        CHECK(small.diagnostics.empty());
        CHECK(small.config->tunnels.at(0).max_sessions == 4);
        CHECK(small.config->tunnels.at(0).min_sessions == 4);
        CHECK(small.config->tunnels.at(1).max_sessions == 8); // no capture: the plain defaults
        CHECK(small.config->tunnels.at(1).min_sessions == 1);
    }

    SUBCASE("with a reverse tunnel and other forwards over the same connection")
    {
        TempDir other;
        LoadResult both = load_tunnel_files(
            other, {{"b.ini", k_connection + "remote_host = ldap.local\nlocal_forward = 5432:db:5432\n"
                                             "vpn_auto_nets = true\nvpn_dns = true\nvpn_listen = [::1]:0\n"}});
        INFO(dump(both));
        REQUIRE(both.ok());
        auto all = pytun::all_forwards(pytun::to_tunnel_options(both.config->tunnels.at(0)));
        REQUIRE(all.size() == 3);
        CHECK(pytun::describe(all[0]) == "R localhost:4000 -> ldap.local:22");
        CHECK(pytun::describe(all[1]) == "L 127.0.0.1:5432 -> db:5432");
        const auto &n = std::get<pytun::TransparentForward>(all[2]);
        CHECK(n.subnets.empty());
        CHECK(n.auto_nets);
        CHECK(n.dns);
        CHECK(n.listen_address == "::1");
        CHECK(n.listen_port == 0);
    }
    SUBCASE("TOML: arrays or strings")
    {
        TempDir other;
        write_file(other.path / "k", k_key);
        write_file(other.path / "kh", "b ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFixtureHostKeyNotReal0000000000000000000\n");
        LoadResult toml = pytun::load_config_from_string(
            "[pytun]\ntunnel_manager_id = \"x\"\n[[tunnel]]\nserver_host = \"b\"\nusername = \"u\"\nkeyfile = \"k\"\n"
            "server_key = \"kh\"\nvpn_subnets = [\"10.0.0.0/8\", \"[fd00::/64]:443\"]\nvpn_exclude = \"10.9.0.0/16\"\n"
            "vpn_dns = true\nvpn_fail_open = true\nvpn_listen = \"12300\"\n",
            "toml", other.path.string());
        INFO(dump(toml));
        REQUIRE(toml.ok());
        const auto &x = std::get<pytun::TransparentForward>(toml.config->tunnels.at(0).forwards.at(0));
        CHECK(x.subnets == std::vector<std::string>{"10.0.0.0/8", "[fd00::/64]:443"});
        CHECK(x.exclude == std::vector<std::string>{"10.9.0.0/16"});
        CHECK(x.dns);
        CHECK(x.fail_open);
        CHECK(x.listen_address == "127.0.0.1");
        CHECK(x.listen_port == 12300);
    }
}

TEST_CASE("vpn_ keys: every mistake named with file, line and key, and what to write")
{
    TempDir tmp;
    LoadResult r = load_tunnel_files(
        tmp, {{"a.ini", k_connection +
                            "vpn_subnets = 10.0.0.0/33, *.corp.example, 10.0.0.0/8\n" // 6
                            "vpn_exclude = 10.1.0.0/16:90-80\n"                       // 7
                            "vpn_ns_hosts = ns.corp\n"                                // 8
                            "vpn_to_ns = 10.0.0.53:0\n"                               // 9
                            "vpn_method = pf\n"                                       // 10
                            "vpn_listen = 10.0.0.1:12300\n"                           // 11
                            "vpn_ipv6 = maybe\n"                                      // 12
                            "vpn_fail_opn = true\n"},                                 // 13
              {"b.ini", k_connection + "vpn_dns = true\n"                            // 6: nothing captured
                                       "vpn_to_ns = 10.0.0.53\n"},                   // 7: fine
              {"c.ini", k_connection + "vpn_subnets =\n"                             // 6
                                       "vpn_to_ns = 10.0.0.53\n"                     // 7: no DNS: no effect
                                       "vpn_listen = x:y:z\n"},                      // 8
              {"d.ini", k_connection + "vpn_subnets = 10.0.0.0/8\n"                  // 6
                                       "vpn_ns_hosts = 10.0.0.53\n"                  // 7
                                       "vpn_dns = off\n"                             // 8: contradicts line 7
                                       "vpn_listen = 12300\n"},                      // 9
              {"e.ini", k_connection + "vpn_subnets = 10.0.0.0/8\n"                  // 6
                                       "local_forward = [::1]:12300:db:5432\n"}});   // 7: the capture's port
    INFO(dump(r));
    CHECK_FALSE(r.ok());
    struct Expected {
        Diagnostic::Severity sev;
        const char *file;
        int line;
        const char *key;
        const char *word;
    };
    const std::vector<Expected> expected = {
        {E, "/a.ini", 6, "vpn_subnets", "'10.0.0.0/33': mask must be 0-32"},
        {E, "/a.ini", 6, "vpn_subnets", "'*.corp.example': a wildcard cannot be captured"},
        {E, "/a.ini", 7, "vpn_exclude", "port range 90-80 is reversed"},
        {E, "/a.ini", 8, "vpn_ns_hosts", "'ns.corp' is not an IP address"},
        {E, "/a.ini", 9, "vpn_to_ns", "'10.0.0.53:0' is not IP[:PORT]"},
        {E, "/a.ini", 10, "vpn_method", "'pf' is not a capture method: write auto"},
        {E, "/a.ini", 11, "vpn_listen", "use 127.0.0.1 or ::1"},
        {E, "/a.ini", 12, "vpn_ipv6", "is not a boolean"},
        {W, "/a.ini", 13, "vpn_fail_opn", "did you mean 'vpn_fail_open'?"},

        {E, "/b.ini", 1, "vpn_subnets", "missing: a VPN capture needs the networks it captures"},

        {E, "/c.ini", 6, "vpn_subnets", "is empty: a VPN capture needs"},
        {W, "/c.ini", 7, "vpn_to_ns", "no effect: DNS is not captured"},
        {E, "/c.ini", 8, "vpn_listen", "write vpn_listen = [IP:]PORT"},

        {E, "/d.ini", 8, "vpn_dns", "vpn_ns_hosts implies it"},

        {E, "/e.ini", 7, "local_forward", "[::1]:12300 is also where vpn_listen in"},
    };
    for (const Expected &x : expected) {
        CAPTURE(x.file);
        CAPTURE(x.line);
        CAPTURE(x.key);
        CAPTURE(x.word);
        CHECK(count(r, x.sev, x.file, x.line, x.key, x.word) == 1);
    }
    CHECK(r.diagnostics.size() == expected.size());
}

TEST_CASE("VPN captures of two tunnels: one port for both is named")
{
    TempDir tmp;
    LoadResult r = load_tunnel_files(
        tmp, {{"a.ini", k_connection + "tunnel_name = a\nvpn_subnets = 10.0.0.0/8\nvpn_listen = 0.0.0.0:12300\n"},
              {"b.ini", k_connection + "tunnel_name = b\n"            // 6
                                       "vpn_subnets = 172.16.0.0/12\n"  // 7
                                       "vpn_listen = 12300\n"}});       // 8: inside a.ini's 0.0.0.0
    INFO(dump(r));
    CHECK_FALSE(r.ok());
    CHECK(count(r, E, "/b.ini", 8, "vpn_listen", "a.ini:8 listens") == 1);
    CHECK(r.diagnostics.size() == 1);
}

TEST_CASE("a tunnel without remote_host and without forwards still needs remote_host")
{
    TempDir tmp;
    LoadResult r = load_tunnel_files(tmp, {{"x.ini", k_connection}});
    CHECK_FALSE(r.ok());
    CHECK(count(r, E, "/x.ini", 1, "remote_host", "missing") == 1);
}

TEST_CASE("standby: [pytun] sets the default, a tunnel overrides it, a bad value names file, line and key")
{
    TempDir tmp;
    write_file(tmp.path / "k", k_key);
    write_file(tmp.path / "kh", "b ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFixtureHostKeyNotReal0000000000000000000\n");
    const std::string tunnel = "server_host = \"b\"\nusername = \"u\"\nkeyfile = \"k\"\nserver_key = \"kh\"\n"
                               "remote_host = \"127.0.0.1\"\n";
    LoadResult r = pytun::load_config_from_string("[pytun]\ntunnel_manager_id = \"x\"\nstandby = true\n"
                                                  "[[tunnel]]\ntunnel_name = \"a\"\nport = 1\n" + tunnel +
                                                      "[[tunnel]]\ntunnel_name = \"b\"\nport = 2\nstandby = false\n" +
                                                      tunnel,
                                                  "toml", tmp.path.string());
    INFO(dump(r));
    REQUIRE(r.ok());
    CHECK(r.config->connector.standby);
    CHECK(r.config->tunnels.at(0).standby);
    CHECK_FALSE(r.config->tunnels.at(1).standby);
    CHECK(pytun::to_tunnel_options(r.config->tunnels.at(0)).standby);
    CHECK_FALSE(pytun::to_tunnel_options(r.config->tunnels.at(1)).standby);

    r = pytun::load_config_from_string("[pytun]\ntunnel_manager_id = \"x\"\n"
                                       "[[tunnel]]\nport = 1\n" + tunnel, "toml", tmp.path.string());
    REQUIRE(r.ok());
    CHECK_FALSE(r.config->tunnels.at(0).standby); // the default keeps today's behaviour

    r = pytun::load_config_from_string("[pytun]\n"                     // 1
                                       "tunnel_manager_id = \"x\"\n"   // 2
                                       "standby = \"yes\"\n"           // 3
                                       "[[tunnel]]\n"                  // 4
                                       "local_forward = \"5432:db:5432\"\n" // 5
                                       "standby = true\n" +            // 6
                                           tunnel.substr(0, tunnel.find("remote_host")),
                                       "toml", tmp.path.string());
    INFO(dump(r));
    CHECK_FALSE(r.ok());
    CHECK(count(r, E, "<string>", 3, "standby", "boolean") == 1);
    CHECK(count(r, W, "<string>", 6, "standby", "no effect") == 1);
}

TEST_CASE("server_host lists: failover bastions in order, ports, IPv6 in brackets, failback_after; mistakes named")
{
    TempDir tmp;
    const std::string host_key = " ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFixtureHostKeyNotReal0000000000000000000\n";
    write_file(tmp.path / "connector.ini", "[pytun]\ntunnel_manager_id = x\ntunnel_dirs = t\n"
                                           "failback_after = 30\nreachability_probe_ms = 500\n");
    write_file(tmp.path / "t/k", k_key);
    write_file(tmp.path / "t/kh", "bastion" + host_key + "[b2]:2222" + host_key + "[::1]:2200" + host_key +
                                      "[bastion]:2022" + host_key);
    const std::string rest = "username = u\nkeyfile = k\nserver_key = kh\nremote_host = h\n";
    write_file(tmp.path / "t/list.ini", "[tunnel]\nserver_host = bastion, b2:2222 ,[::1]:2200\n" + rest);
    write_file(tmp.path / "t/one.ini", "[tunnel]\nserver_host = bastion\nserver_port = 2022\nport = 4001\n"
                                       "failback_after = off\n" + rest);
    LoadResult r = pytun::load_config((tmp.path / "connector.ini").string());
    INFO(dump(r));
    REQUIRE(r.ok());
    CHECK(r.config->connector.reachability_probe_ms == std::chrono::milliseconds(500));
    CHECK(r.config->connector.failback_after == std::chrono::seconds(30));
    const pytun::TunnelOptions list = pytun::to_tunnel_options(r.config->tunnels[0]);
    CHECK(list.server_host == "bastion");
    CHECK(list.server_port == 22);
    CHECK((list.failover == std::vector<pytun::Bastion>{{"b2", 2222}, {"::1", 2200}}));
    CHECK(list.failback_after == std::chrono::seconds(30)); // [pytun]'s
    CHECK(pytun::describe(pytun::all_bastions(list)[2]) == "[::1]:2200");
    const pytun::TunnelOptions one = pytun::to_tunnel_options(r.config->tunnels[1]);
    CHECK(one.server_host == "bastion"); // a single host exactly as before
    CHECK(one.server_port == 2022);
    CHECK(one.failover.empty());
    CHECK(one.failback_after == std::chrono::seconds(0));

    TempDir bad;
    write_file(bad.path / "connector.ini", "[pytun]\ntunnel_manager_id = x\ntunnel_dirs = t\n"
                                           "reachability_probe_ms = 10\n"  // 4
                                           "failback_after = soon\n");     // 5
    write_file(bad.path / "t/k", k_key);
    write_file(bad.path / "t/kh", "a" + host_key);
    write_file(bad.path / "t/bad.ini", "[tunnel]\n"
                                       "server_host = a, , b:0, ::1, c:x, [::1\n" // 2
                                       "failback_after = -3\n" + rest);          // 3
    LoadResult e = pytun::load_config((bad.path / "connector.ini").string());
    INFO(dump(e));
    CHECK_FALSE(e.ok());
    CHECK(count(e, E, "connector.ini", 4, "reachability_probe_ms", "0 (off) or at least 50") == 1);
    CHECK(count(e, E, "connector.ini", 5, "failback_after", "'soon' is not a number") == 1);
    CHECK(count(e, E, "/bad.ini", 2, "server_host", "entry 2 of the list is empty") == 1);
    CHECK(count(e, E, "/bad.ini", 2, "server_host", "entry 3 of the list 'b:0': the port must be") == 1);
    CHECK(count(e, E, "/bad.ini", 2, "server_host", "entry 4 of the list '::1' looks like an IPv6 address") == 1);
    CHECK(count(e, E, "/bad.ini", 2, "server_host", "entry 5 of the list 'c:x': the port must be") == 1);
    CHECK(count(e, E, "/bad.ini", 2, "server_host", "entry 6 of the list '[::1': write an IPv6 address") == 1);
    CHECK(count(e, E, "/bad.ini", 3, "failback_after", "from 0 to 86400") == 1);
}
