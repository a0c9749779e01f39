// SPDX-License-Identifier: MIT
// DNS messages built byte by byte for the tests of vpn/dns_message.h and the
// relay (queries, answers with compressed names, EDNS0 OPT records).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace pytun::test::dns {

inline void put16(std::string &out, unsigned value)
{
    out.push_back(static_cast<char>((value >> 8) & 0xff));
    out.push_back(static_cast<char>(value & 0xff));
}

/// "www.example.com" in wire form (labels, root).
inline std::string wire_name(std::string_view name)
{
    std::string out;
    while (!name.empty()) {
        const std::size_t dot = name.find('.');
        const std::string_view label = name.substr(0, dot);
        out.push_back(static_cast<char>(label.size()));
        out.append(label);
        if (dot == std::string_view::npos)
            break;
        name.remove_prefix(dot + 1);
    }
    out.push_back('\0');
    return out;
}

struct Header {
    unsigned id = 0x1234;
    unsigned flags = 0x0100; ///< RD
    unsigned qd = 1, an = 0, ns = 0, ar = 0;
    std::string bytes() const
    {
        std::string out;
        put16(out, id);
        put16(out, flags);
        put16(out, qd);
        put16(out, an);
        put16(out, ns);
        put16(out, ar);
        return out;
    }
};

inline std::string question(std::string_view name, unsigned type = 1, unsigned klass = 1)
{
    std::string out = wire_name(name);
    put16(out, type);
    put16(out, klass);
    return out;
}

/// An OPT pseudo-record advertising `udp_size` (RFC 6891 §6.1.2).
inline std::string opt_record(unsigned udp_size, std::string_view options = {})
{
    std::string out(1, '\0'); // root name
    put16(out, 41);
    put16(out, udp_size);
    put16(out, 0);
    put16(out, 0); // TTL: extended rcode, version, flags
    put16(out, static_cast<unsigned>(options.size()));
    out.append(options);
    return out;
}

/// An A query for `name`, with an OPT record when `edns_size` is not 0.
inline std::string query(std::string_view name, unsigned type = 1, unsigned id = 0x1234, unsigned edns_size = 0)
{
    Header h;
    h.id = id;
    h.ar = edns_size ? 1 : 0;
    return h.bytes() + question(name, type) + (edns_size ? opt_record(edns_size) : std::string());
}

/// An A record whose name points at the question's (offset 12).
inline std::string a_record(unsigned last_octet, unsigned ttl = 60)
{
    std::string out = "\xc0\x0c";
    put16(out, 1);
    put16(out, 1);
    put16(out, ttl >> 16);
    put16(out, ttl & 0xffff);
    put16(out, 4);
    out += std::string{'\xc6', '\x12', '\x05', static_cast<char>(last_octet)};
    return out;
}

/// An answer to query(name) with `count` A records (and an OPT record when
/// `edns_size` is not 0).
inline std::string answer(std::string_view name, unsigned count, unsigned id = 0x1234, unsigned edns_size = 0,
                          unsigned rcode = 0)
{
    Header h;
    h.id = id;
    h.flags = 0x8180 | rcode; // QR, RD, RA
    h.an = count;
    h.ar = edns_size ? 1 : 0;
    std::string out = h.bytes() + question(name);
    for (unsigned i = 0; i < count; ++i)
        out += a_record(i % 256);
    if (edns_size)
        out += opt_record(edns_size);
    return out;
}

} // namespace pytun::test::dns
