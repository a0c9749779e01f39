// SPDX-License-Identifier: MIT
// Device authorization: RSA-PSS signature over a MAC address, checked with OpenSSL.
#include <pytun/device.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <memory>

#include <nlohmann/json.hpp>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

namespace pytun {
namespace {

std::string lower(std::string s)
{
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return s;
}

bool base64_decode(std::string in, std::string &out)
{
    std::erase_if(in, [](unsigned char c) { return std::isspace(c); });
    // Python's urlsafe alphabet is accepted too; padding may be missing.
    std::replace(in.begin(), in.end(), '-', '+');
    std::replace(in.begin(), in.end(), '_', '/');
    while (in.size() % 4 != 0)
        in.push_back('=');
    if (in.empty())
        return false;
    out.assign(in.size() / 4 * 3, '\0');
    int n = EVP_DecodeBlock(reinterpret_cast<unsigned char *>(out.data()),
                            reinterpret_cast<const unsigned char *>(in.data()), static_cast<int>(in.size()));
    if (n < 0)
        return false;
    std::size_t pad = 0;
    for (auto it = in.rbegin(); it != in.rend() && *it == '=' && pad < 2; ++it)
        ++pad;
    out.resize(static_cast<std::size_t>(n) - pad);
    return true;
}

struct PkeyFree { void operator()(EVP_PKEY *k) const { EVP_PKEY_free(k); } };
struct MdCtxFree { void operator()(EVP_MD_CTX *c) const { EVP_MD_CTX_free(c); } };
struct BioFree { void operator()(BIO *b) const { BIO_free(b); } };

bool verify_pss(EVP_PKEY *key, const std::string &data, const std::string &sig)
{
    std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
    EVP_PKEY_CTX *pctx = nullptr;
    if (!ctx || EVP_DigestVerifyInit(ctx.get(), &pctx, EVP_sha256(), nullptr, key) != 1)
        return false;
    if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
        EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) != 1 ||
        EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_MAX) != 1)
        return false;
    return EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char *>(sig.data()), sig.size(),
                            reinterpret_cast<const unsigned char *>(data.data()), data.size()) == 1;
}

} // namespace

std::vector<std::string> local_mac_addresses(const std::string &sys_class_net)
{
    namespace fs = std::filesystem;
    std::vector<std::string> macs;
    std::error_code ec;
    for (const auto &entry : fs::directory_iterator(sys_class_net, ec)) {
        std::ifstream in(entry.path() / "address");
        std::string mac;
        if (!(in >> mac) || mac.size() != 17)
            continue;
        mac = lower(mac);
        if (mac == "00:00:00:00:00:00")
            continue;
        if (std::find(macs.begin(), macs.end(), mac) == macs.end())
            macs.push_back(mac);
    }
    std::sort(macs.begin(), macs.end());
    return macs;
}

DeviceAuthorization check_device_signature(const std::string &signature, const std::string &public_key_file,
                                           const std::vector<std::string> &macs)
{
    DeviceAuthorization r;
    if (signature.empty()) {
        r.authorized = true;
        r.message = "no signature configured: device binding is off";
        return r;
    }
    std::string json_text;
    if (!base64_decode(signature, json_text)) {
        r.message = "signature is not valid base64";
        return r;
    }
    std::string payload, sig_b64;
    try {
        auto j = nlohmann::json::parse(json_text);
        payload = j.at("payload").get<std::string>();
        sig_b64 = j.at("sig").get<std::string>();
    } catch (const std::exception &) {
        r.message = "signature is not the expected {\"payload\": MAC, \"sig\": ...} JSON";
        return r;
    }
    std::string sig;
    if (!base64_decode(sig_b64, sig)) {
        r.message = "signature: 'sig' is not valid base64";
        return r;
    }
    std::unique_ptr<BIO, BioFree> bio(BIO_new_file(public_key_file.c_str(), "r"));
    std::unique_ptr<EVP_PKEY, PkeyFree> key(bio ? PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr)
                                                : nullptr);
    if (!key) {
        r.message = "cannot read the PEM public key " + public_key_file + " (mac_address_pub_key)";
        return r;
    }
    if (EVP_PKEY_get_base_id(key.get()) != EVP_PKEY_RSA) {
        r.message = "the public key " + public_key_file + " is not an RSA key";
        return r;
    }
    if (!verify_pss(key.get(), payload, sig)) {
        r.message = "the signature for MAC " + payload + " does not verify with " + public_key_file;
        return r;
    }
    const std::string mac = lower(payload);
    if (std::find(macs.begin(), macs.end(), mac) == macs.end()) {
        std::string have;
        for (const auto &m : macs)
            have += (have.empty() ? "" : ", ") + m;
        r.message = "the signature is for MAC " + mac + ", which no interface of this machine has (" +
                    (have.empty() ? "none found" : have) + ")";
        return r;
    }
    r.authorized = true;
    r.mac_address = mac;
    r.message = "device authorized: MAC " + mac;
    return r;
}

DeviceAuthorization check_device_authorization(const ConnectorConfig &connector)
{
    if (connector.signature.empty())
        return check_device_signature({}, {}, {});
    return check_device_signature(connector.signature, connector.mac_address_pub_key, local_mac_addresses());
}

} // namespace pytun
