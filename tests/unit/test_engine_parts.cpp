// SPDX-License-Identifier: MIT
// Unit tests of the engine's parts that need no network: the relay ring
// buffer, private key inspection, RSA keys and their SHA-2 signatures, the
// SSH wire format, known_hosts parsing; the shared reachability probe (against
// a listener on loopback).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

#include <pytun/error.h>

#include "ssh/ring_buffer.h"
#include "log.h"
#include "loop/event_loop.h"
#include "manager/reachability.h"
#include "ssh/key_file.h"
#include "ssh/known_hosts.h"
#include "ssh/rsa_key.h"
#include "ssh/user_auth.h"
#include "ssh/wire.h"
#include "util/base64.h"

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

namespace {

std::string read_text(const std::string &path)
{
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

// The blob of a .pub file ("ssh-rsa AAAA... comment").
std::vector<unsigned char> pub_blob(const std::string &pub_path)
{
    const std::string text = read_text(pub_path);
    const auto start = text.find(' ') + 1;
    return pytun::detail::base64_decode(text.substr(start, text.find(' ', start) - start));
}

// Verifies an SSH RSA signature the way a server does: the key from the
// blob (e, n), PKCS#1 v1.5 with the hash the algorithm names.
bool server_verifies(const std::vector<unsigned char> &blob, const std::string &algorithm,
                     const std::vector<unsigned char> &data, const std::vector<unsigned char> &signature)
{
    pytun::detail::WireReader in(blob);
    std::string name;
    std::span<const unsigned char> e, n;
    if (!in.string(name) || !in.string(e) || !in.string(n))
        return false;
    BIGNUM *bn_e = BN_bin2bn(e.data(), static_cast<int>(e.size()), nullptr);
    BIGNUM *bn_n = BN_bin2bn(n.data(), static_cast<int>(n.size()), nullptr);
    OSSL_PARAM_BLD *build = OSSL_PARAM_BLD_new();
    OSSL_PARAM_BLD_push_BN(build, "n", bn_n);
    OSSL_PARAM_BLD_push_BN(build, "e", bn_e);
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(build);
    EVP_PKEY_CTX *kctx = EVP_PKEY_CTX_new_from_name(nullptr, "RSA", nullptr);
    EVP_PKEY *key = nullptr;
    EVP_PKEY_fromdata_init(kctx);
    EVP_PKEY_fromdata(kctx, &key, EVP_PKEY_PUBLIC_KEY, params);
    const EVP_MD *md = algorithm == "rsa-sha2-512" ? EVP_sha512() : algorithm == "rsa-sha2-256" ? EVP_sha256() : EVP_sha1();
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    const bool ok = key && EVP_DigestVerifyInit(ctx, nullptr, md, nullptr, key) > 0 &&
                    EVP_DigestVerify(ctx, signature.data(), signature.size(), data.data(), data.size()) == 1;
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(key);
    EVP_PKEY_CTX_free(kctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(build);
    BN_free(bn_e);
    BN_free(bn_n);
    return ok;
}

} // namespace

TEST_CASE("RSA keys: OpenSSH and PEM files give the .pub file's key; SHA-2 and SHA-1 signatures verify")
{
    TempDir dir;
    std::string message;
    // As the original connector's README makes them, and the older PEM form.
    const auto openssh = keygen(dir, "id_rsa", "-t rsa -b 4096 -N ''");
    const auto pem = keygen(dir, "id_rsa_pem", "-t rsa -b 4096 -m PEM -N ''");
    const auto pem_encrypted = keygen(dir, "id_rsa_enc", "-t rsa -b 2048 -m PEM -N secret");
    const auto openssh_encrypted = keygen(dir, "id_rsa_oenc", "-t rsa -b 2048 -N secret");

    for (const auto &path : {openssh, pem}) {
        CAPTURE(path);
        pytun::detail::RsaKey key;
        REQUIRE(key.load(path, "", message) == std::error_code{});
        CHECK(key.bits() == 4096);
        // The blob named ssh-rsa is exactly the .pub file's.
        CHECK(key.public_blob("ssh-rsa") == pub_blob(path + ".pub"));
        const auto named = key.public_blob("rsa-sha2-512");
        pytun::detail::WireReader in(named);
        std::string name;
        CHECK((in.string(name) && name == "rsa-sha2-512"));

        const std::vector<unsigned char> data = {'d', 'a', 't', 'a', 0, 1, 2, 3};
        for (const char *algorithm : {"rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"}) {
            CAPTURE(algorithm);
            std::vector<unsigned char> signature;
            REQUIRE(key.sign(algorithm, data, signature));
            CHECK(signature.size() == 512);
            CHECK(server_verifies(named, algorithm, data, signature));
            // The hash is the one named: a SHA-512 signature does not verify as SHA-256.
            if (std::string(algorithm) == "rsa-sha2-512")
                CHECK_FALSE(server_verifies(named, "rsa-sha2-256", data, signature));
        }
        std::vector<unsigned char> signature;
        CHECK_FALSE(key.sign("rsa-sha2-384", data, signature));
    }

    pytun::detail::RsaKey key;
    CHECK(key.load(pem_encrypted, "", message) == Errc::key_encrypted);
    CHECK(key.load(pem_encrypted, "wrong", message) == Errc::key_encrypted);
    CHECK(message.find("wrong") != std::string::npos);
    CHECK(key.load(pem_encrypted, "secret", message) == std::error_code{});
    CHECK(key.public_blob("ssh-rsa") == pub_blob(pem_encrypted + ".pub"));
    CHECK(key.load(openssh_encrypted, "secret", message) == Errc::key_unsupported);
    CHECK(message.find("encrypted") != std::string::npos);
    CHECK_FALSE(key.loaded());
    CHECK(key.load(keygen(dir, "ed", "-t ed25519 -N ''"), "", message) == Errc::key_unsupported);
    CHECK(key.load((dir.path / "missing").string(), "", message) == Errc::key_file_unreadable);
}

TEST_CASE("SSH wire format: strings and mpints as RFC 4251 writes them; reads past the end fail")
{
    std::vector<unsigned char> out;
    pytun::detail::wire_put_string(out, "ab");
    const unsigned char high[] = {0x00, 0x80, 0x01}; // a leading zero is dropped, then one added for the top bit
    pytun::detail::wire_put_mpint(out, high);
    pytun::detail::wire_put_mpint(out, std::span<const unsigned char>());
    const std::vector<unsigned char> expected = {0, 0, 0, 2, 'a', 'b', 0, 0, 0, 3, 0x00, 0x80, 0x01, 0, 0, 0, 0};
    CHECK(out == expected);

    pytun::detail::WireReader in(out);
    std::string s;
    std::span<const unsigned char> bytes;
    CHECK(in.string(s));
    CHECK(s == "ab");
    CHECK(in.string(bytes));
    CHECK(bytes.size() == 3);
    CHECK(in.skip_string());
    unsigned char b = 0;
    CHECK_FALSE(in.byte(b));
    CHECK_FALSE(in.ok());

    const std::vector<unsigned char> lying = {0, 0, 0, 9, 'x'}; // a length past the end
    pytun::detail::WireReader bad(lying);
    CHECK_FALSE(bad.string(s));
}

TEST_CASE("server banners: the OpenSSH version decides whether rsa-sha2 blobs are offered")
{
    using pytun::detail::openssh_version;
    CHECK(openssh_version("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3") == 902);
    CHECK(openssh_version("SSH-2.0-OpenSSH_7.2") == 702);
    CHECK(openssh_version("SSH-2.0-OpenSSH_7.1p2") == 701);
    CHECK(openssh_version("SSH-2.0-OpenSSH_for_Windows_8.1") == 801);
    CHECK(openssh_version("SSH-2.0-OpenSSH_10.0") == 1000);
    CHECK(openssh_version("SSH-2.0-dropbear_2022.83") == 0);
    CHECK(openssh_version("SSH-2.0-Go") == 0);
    CHECK(openssh_version("SSH-2.0-OpenSSH_") == 0);
    CHECK(openssh_version("") == 0);
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

TEST_CASE("reachability probes: one probe per address however many watch it; results reach every watcher; "
          "the probe stops when the last leaves")
{
    using namespace std::chrono_literals;
    // A listener on loopback that counts the connections it accepts.
    int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(listener >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    REQUIRE(::bind(listener, reinterpret_cast<sockaddr *>(&addr), sizeof addr) == 0);
    REQUIRE(::getsockname(listener, reinterpret_cast<sockaddr *>(&addr), &len) == 0);
    REQUIRE(::listen(listener, 64) == 0);
    const std::uint16_t port = ntohs(addr.sin_port);
    std::atomic<int> accepted{0};
    std::atomic<bool> done{false};
    std::thread acceptor([&] {
        while (!done) {
            pollfd p{listener, POLLIN, 0};
            if (::poll(&p, 1, 20) > 0) {
                int fd = ::accept(listener, nullptr, nullptr);
                if (fd >= 0) {
                    ++accepted;
                    ::close(fd);
                }
            }
        }
    });

    pytun::detail::EventLoop loop;
    pytun::detail::ReachabilityProbes probes(loop.io(), 100ms);
    constexpr int k_watchers = 10;
    std::atomic<int> results{0}, reachable{0};
    std::vector<pytun::detail::ReachabilityProbes::Id> ids;
    for (int i = 0; i < k_watchers; ++i)
        ids.push_back(probes.watch("127.0.0.1", port, [&](bool ok) {
            ++results;
            if (ok)
                ++reachable;
        }));
    // A closed port: its watcher hears "unreachable".
    std::atomic<int> unreachable{0};
    const auto closed = probes.watch("127.0.0.1", 1, [&](bool ok) {
        if (!ok)
            ++unreachable;
    });
    std::this_thread::sleep_for(1000ms);
    for (auto id : ids)
        probes.unwatch(id);
    probes.unwatch(closed);
    const auto sent = probes.probes_sent("127.0.0.1", port);
    const int seen = accepted.load();
    MESSAGE(k_watchers << " watchers, 1 s at 100 ms: " << sent << " probes, " << seen << " connections accepted, "
                       << results.load() << " results delivered");
    CHECK(sent >= 5);
    CHECK(sent <= 14); // one probe per interval (±25 %), not one per watcher
    CHECK(seen >= static_cast<int>(sent) - 1);
    CHECK(seen <= static_cast<int>(sent));
    CHECK(reachable.load() >= k_watchers * (static_cast<int>(sent) - 1));
    CHECK(reachable.load() == results.load());
    CHECK(unreachable.load() >= 3);
    // Nobody watches: the probe stops.
    std::this_thread::sleep_for(300ms);
    const int after_leave = accepted.load();
    std::this_thread::sleep_for(500ms);
    CHECK(accepted.load() == after_leave);
    CHECK(probes.probes_sent("127.0.0.1", port) <= sent + 1);
    loop.stop();
    done = true;
    acceptor.join();
    ::close(listener);
}
