// SPDX-License-Identifier: MIT
// Bulk data through a running tunnel, each way, checked byte for byte
// (SHA-256 on both ends). For doctest programs.
#pragma once

#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <vector>

#include <doctest/doctest.h>

#include <pytun/tunnel.h>

#include "fixture.h"

namespace pytun::test {

/// client -> bastion -> `tunnel` -> `sink`: all of `data` arrives intact.
inline void check_upload(pytun::Tunnel &tunnel, const SinkService &sink, const std::vector<std::uint8_t> &data)
{
    int fd = connect_tcp(tunnel.listen_port());
    REQUIRE(fd >= 0);
    REQUIRE(send_all(fd, data.data(), data.size()));
    ::shutdown(fd, SHUT_WR);
    read_until_eof(fd);
    ::close(fd);
    REQUIRE(wait_until([&] { return !sink.received().empty(); }, std::chrono::seconds(30)));
    CHECK(sink.received()[0].bytes == data.size());
    CHECK(sink.received()[0].sha256 == sha256_hex(data.data(), data.size()));
}

/// `source` -> `tunnel` -> bastion -> client: all `size` bytes arrive intact.
inline void check_download(pytun::Tunnel &tunnel, const SourceService &source, std::size_t size)
{
    int fd = connect_tcp(tunnel.listen_port());
    REQUIRE(fd >= 0);
    auto got = read_until_eof(fd);
    ::close(fd);
    REQUIRE(got.size() == size);
    REQUIRE(wait_until([&] { return !source.sent_sha256().empty(); }, std::chrono::seconds(10)));
    CHECK(sha256_hex(got.data(), got.size()) == source.sent_sha256()[0]);
}

} // namespace pytun::test
