// SPDX-License-Identifier: MIT
// Unit tests of the engine's parts that need no network: the relay ring
// buffer, private key inspection, known_hosts parsing.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <pytun/error.h>

#include "ssh/ring_buffer.h"
#include "log.h"
#include "ssh/key_file.h"
#include "ssh/known_hosts.h"

namespace fs = std::filesystem;
using pytun::Errc;
using pytun::detail::KeyFileInfo;

namespace {

struct TempDir {
    fs::path path;
    TempDir()
    {
        char pattern[] = "/tmp/pytun-unit-XXXXXX";
        path = ::mkdtemp(pattern);
    }
    ~TempDir() { fs::remove_all(path); }
    std::string file(const std::string &name, const std::string &content) const
    {
        std::ofstream(path / name) << content;
        return (path / name).string();
    }
};

// ssh-keygen makes real keys; a unit test without it cannot run.
std::string keygen(const TempDir &dir, const std::string &name, const std::string &args)
{
    const std::string path = (dir.path / name).string();
    const std::string cmd = "ssh-keygen -q " + args + " -f '" + path + "' >/dev/null 2>&1";
    if (std::system(cmd.c_str()) != 0) {
        MESSAGE("ssh-keygen not available");
        std::exit(77);
    }
    return path;
}

} // namespace

TEST_CASE("ring buffer: wraps around, never hands out overlapping regions")
{
    pytun::detail::RingBuffer ring;
    constexpr std::size_t cap = pytun::detail::RingBuffer::k_capacity;
    CHECK(ring.empty());
    auto space = ring.writable();
    REQUIRE(space.size() == cap);
    for (std::size_t i = 0; i < cap; ++i)
        space[i] = static_cast<char>(i % 251);
    ring.commit(cap);
    CHECK(ring.full());
    CHECK(ring.writable().empty());

    ring.consume(1000);
    // The free space is at the front now, before the remaining data.
    auto front = ring.writable();
    REQUIRE(front.size() == 1000);
    for (std::size_t i = 0; i < 1000; ++i)
        front[i] = 'x';
    ring.commit(1000);
    // Reading continues from offset 1000 to the end, then wraps to the 'x's.
    auto first = ring.readable();
    REQUIRE(first.size() == cap - 1000);
    CHECK(first[0] == static_cast<char>(1000 % 251));
    ring.consume(first.size());
    auto second = ring.readable();
    REQUIRE(second.size() == 1000);
    CHECK(second[0] == 'x');
    ring.consume(1000);
    CHECK(ring.empty());
    ring.release_if_empty();
    CHECK(ring.writable().size() == cap); // memory comes back on demand
}

TEST_CASE("key files: format, encryption and type are read from the file")
{
    TempDir dir;
    KeyFileInfo info;
    std::string message;

    const auto ed = keygen(dir, "ed", "-t ed25519 -N ''");
    CHECK(pytun::detail::inspect_key_file(ed, info, message) == std::error_code{});
    CHECK(info.format == KeyFileInfo::Format::openssh);
    CHECK(info.key_type == "ssh-ed25519");
    CHECK_FALSE(info.encrypted);

    const auto enc = keygen(dir, "enc", "-t ed25519 -N secret");
    CHECK(pytun::detail::inspect_key_file(enc, info, message) == std::error_code{});
    CHECK(info.encrypted);

    const auto rsa_pem = keygen(dir, "rsa", "-t rsa -b 2048 -m PEM -N ''");
    CHECK(pytun::detail::inspect_key_file(rsa_pem, info, message) == std::error_code{});
    CHECK(info.format == KeyFileInfo::Format::pem);
    CHECK(info.is_rsa());

    const auto rsa_pem_enc = keygen(dir, "rsa-enc", "-t rsa -b 2048 -m PEM -N secret");
    CHECK(pytun::detail::inspect_key_file(rsa_pem_enc, info, message) == std::error_code{});
    CHECK(info.encrypted);

    const auto ecdsa_pkcs8 = keygen(dir, "ecdsa", "-t ecdsa -m PKCS8 -N ''");
    CHECK(pytun::detail::inspect_key_file(ecdsa_pkcs8, info, message) == std::error_code{});
    CHECK(info.format == KeyFileInfo::Format::pkcs8);
    CHECK(info.key_type == "ecdsa");

    CHECK(pytun::detail::inspect_key_file(ed + ".pub", info, message) == Errc::key_unsupported);
    CHECK(message.find("public key") != std::string::npos);

    CHECK(pytun::detail::inspect_key_file(dir.file("junk", "hello\n"), info, message) == Errc::key_unsupported);
    CHECK(pytun::detail::inspect_key_file((dir.path / "missing").string(), info, message) ==
          Errc::key_file_unreadable);
    CHECK(message.find("missing") != std::string::npos);

    if (::geteuid() != 0) { // root reads everything
        ::chmod(ed.c_str(), 0);
        CHECK(pytun::detail::inspect_key_file(ed, info, message) == Errc::key_file_unreadable);
    }
}

TEST_CASE("known_hosts: the host's key types become the host-key preference")
{
    TempDir dir;
    auto log = pytun::detail::make_logger("unit");
    const auto ed = keygen(dir, "host_ed", "-t ed25519 -N ''");
    const auto ec = keygen(dir, "host_ec", "-t ecdsa -N ''");
    auto pub = [](const std::string &path) {
        std::ifstream in(path + ".pub");
        std::string type, key;
        in >> type >> key;
        return type + " " + key;
    };
    const std::string file = dir.file("known_hosts", "# comment\n"
                                                     "garbage line\n"
                                                     "[10.0.0.1]:2222 " + pub(ec) + "\n"
                                                     "other.example " + pub(ed) + "\n"
                                                     "[bastion.example]:2222 " + pub(ec) + "\n"
                                                     "bastion.example " + pub(ed) + "\n");
    pytun::detail::KnownHosts kh;
    std::string message;
    REQUIRE(kh.load(file, "bastion.example", 2222, *log, message) == std::error_code{});
    CHECK(kh.hostkey_preference() == "ecdsa-sha2-nistp256,ssh-ed25519");

    pytun::detail::KnownHosts other;
    REQUIRE(other.load(file, "unknown.example", 22, *log, message) == std::error_code{});
    CHECK(other.hostkey_preference().empty());

    // Hashed entries (ssh-keygen -H) match the same way.
    const std::string clean = dir.file("known_hosts_hashed", "[bastion.example]:2222 " + pub(ec) + "\n"
                                                             "bastion.example " + pub(ed) + "\n");
    REQUIRE(std::system(("ssh-keygen -q -H -f '" + clean + "' >/dev/null 2>&1").c_str()) == 0);
    std::ifstream hashed_text(clean);
    std::string first_line;
    std::getline(hashed_text, first_line);
    CHECK(first_line.rfind("|1|", 0) == 0);
    pytun::detail::KnownHosts hashed;
    REQUIRE(hashed.load(clean, "bastion.example", 2222, *log, message) == std::error_code{});
    CHECK(hashed.hostkey_preference() == "ecdsa-sha2-nistp256,ssh-ed25519");

    pytun::detail::KnownHosts missing;
    CHECK(missing.load((dir.path / "nope").string(), "h", 22, *log, message) == Errc::known_hosts_unreadable);
    CHECK(message.find("nope") != std::string::npos);
}

TEST_CASE("fingerprints are printed the way ssh-keygen -l prints them")
{
    TempDir dir;
    const auto ed = keygen(dir, "fp", "-t ed25519 -N ''");
    std::ifstream in(ed + ".pub");
    std::string type, b64;
    in >> type >> b64;
    // Decode the base64 public key blob with a tiny decoder.
    std::string blob;
    int val = 0, bits = -8;
    for (unsigned char c : b64) {
        const char *table = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        const char *p = std::strchr(table, c);
        if (!p || c == '\0')
            break;
        val = (val << 6) + static_cast<int>(p - table);
        bits += 6;
        if (bits >= 0) {
            blob.push_back(static_cast<char>((val >> bits) & 0xFF));
            bits -= 8;
        }
    }
    const std::string out_file = (dir.path / "fp.txt").string();
    REQUIRE(std::system(("ssh-keygen -l -E sha256 -f '" + ed + ".pub' > '" + out_file + "'").c_str()) == 0);
    std::ifstream fp(out_file);
    std::string bits_field, expected;
    fp >> bits_field >> expected;
    CHECK(pytun::detail::KnownHosts::fingerprint(blob.data(), blob.size()) == expected);
}
