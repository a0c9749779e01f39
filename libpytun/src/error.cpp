// SPDX-License-Identifier: MIT
// The "pytun" error category: each code's message says what to do about it.
#include <pytun/error.h>

namespace pytun {
namespace {

class Category final : public std::error_category {
public:
    const char *name() const noexcept override { return "pytun"; }

    std::string message(int code) const override
    {
        switch (static_cast<Errc>(code)) {
        case Errc::ok:
            return "success";
        case Errc::invalid_options:
            return "invalid tunnel options: a required setting is missing or out of range";
        case Errc::bastion_unresolved:
            return "the bastion's host name does not resolve: check server_host and DNS";
        case Errc::bastion_unreachable:
            return "the bastion refused the connection or is unreachable: check server_host, server_port "
                   "and that sshd runs there";
        case Errc::bastion_timeout:
            return "the bastion did not answer in time: check the address, firewalls and the network";
        case Errc::handshake_failed:
            return "SSH handshake failed: the peer is not an SSH server or shares no algorithm with libssh2";
        case Errc::host_key_unknown:
            return "the bastion's host key is not in the known_hosts file: verify its fingerprint and add it";
        case Errc::host_key_changed:
            return "the bastion's host key differs from the one in known_hosts: this may be an attack; "
                   "replace the entry only if the change is expected";
        case Errc::host_key_revoked:
            return "the bastion's host key is marked @revoked in known_hosts";
        case Errc::known_hosts_unreadable:
            return "the known_hosts file (server_key) is missing or unreadable";
        case Errc::key_file_unreadable:
            return "the private key file (keyfile) is missing or unreadable";
        case Errc::key_encrypted:
            return "the private key is encrypted: use an unencrypted copy for the service";
        case Errc::key_unsupported:
            return "the private key file's format is not supported: use an OpenSSH ed25519, ecdsa or RSA key";
        case Errc::rsa_key_refused:
            return "the bastion refused the RSA key signed with SHA-1 (ssh-rsa), the only signature pytun could "
                   "offer it (it is not OpenSSH 7.2 or later, or the key is encrypted in OpenSSH format); make an "
                   "ed25519 key (pytun --make-key) or allow ssh-rsa on the bastion (PubkeyAcceptedAlgorithms "
                   "+ssh-rsa)";
        case Errc::key_not_authorized:
            return "the bastion does not accept this key for this user: add the public key to the user's "
                   "authorized_keys on the bastion";
        case Errc::remote_port_refused:
            return "the bastion refused to listen on the port: this key or user may not listen there "
                   "(permitlisten, PermitListen, AllowTcpForwarding), or another session holds the port";
        case Errc::transport_lost:
            return "the SSH connection to the bastion was lost";
        case Errc::stopped:
            return "stopped";
        case Errc::local_service_unreachable:
            return "the local service (remote_host:remote_port) refused the connection or timed out";
        case Errc::local_port_unavailable:
            return "cannot listen on the forward's local address: another program uses the port, or the address "
                   "is not one of this machine's; choose another port or stop the other program";
        case Errc::proxy_failed:
            return "the proxy (proxy, or https_proxy/all_proxy) could not be used: it is unreachable, refused "
                   "to connect to the SSH host, or is not an HTTP CONNECT or SOCKS5 proxy; the message says "
                   "what it answered";
        case Errc::proxy_auth_failed:
            return "the proxy did not accept the user name and password in its URL, or asks for some: write "
                   "them into it as SCHEME://USER:PASSWORD@HOST:PORT";
        case Errc::capture_failed:
            return "the VPN capture's firewall rules cannot be installed: pytun needs root or CAP_NET_ADMIN, and "
                   "nft (Debian package nftables) or iptables";
        }
        return "unknown pytun error " + std::to_string(code);
    }
};

} // namespace

const std::error_category &error_category() noexcept
{
    static const Category category;
    return category;
}

} // namespace pytun
