// SPDX-License-Identifier: MIT
// An embedder that does not ask for the batched AES-CTR (the default) gets
// OpenSSL left alone: no provider, no default properties; asking after the
// first tunnel is too late (a process of its own, since the choice is
// process-wide).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <string>

#include <openssl/evp.h>
#include <openssl/provider.h>

#include <pytun/crypto.h>

#include "ssh/libssh2_global.h"

TEST_CASE("not turned on: libssh2's AES-CTR stays OpenSSL's own")
{
    CHECK(pytun::aes_ctr_implementation() == "not decided yet");
    pytun::detail::ensure_libssh2_initialised();
    CHECK(pytun::aes_ctr_implementation() == "OpenSSL (batching not turned on)");
    CHECK(OSSL_PROVIDER_available(nullptr, "pytun-batched-ctr") == 0);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    unsigned char key[16] = {}, iv[16] = {};
    REQUIRE(EVP_CipherInit(ctx, EVP_aes_128_ctr(), key, iv, 1) == 1);
    CHECK(std::string(OSSL_PROVIDER_get0_name(EVP_CIPHER_get0_provider(EVP_CIPHER_CTX_get0_cipher(ctx)))) == "default");
    EVP_CIPHER_CTX_free(ctx);
    // Too late to turn it on: the choice was made.
    pytun::set_aes_ctr_batching(true);
    pytun::detail::ensure_libssh2_initialised();
    CHECK(pytun::aes_ctr_implementation() == "OpenSSL (batching not turned on)");
    CHECK(OSSL_PROVIDER_available(nullptr, "pytun-batched-ctr") == 0);
}
