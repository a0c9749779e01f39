// SPDX-License-Identifier: MIT
// DNS messages as the VPN mode's DNS relay must understand them: pure and
// bounded (bytes in, decisions and bytes out; no sockets). The header and
// the question section of a query (to forward it, or to answer it FORMERR,
// NOTIMP, REFUSED or SERVFAIL ourselves), the EDNS0 UDP size a client
// advertises, message IDs (the relay rewrites them to pipeline queries of
// many clients over one stream), truncation of an answer to what a UDP
// client can take (TC set: the client retries over TCP), and RFC 1035 §4.2.2
// framing for DNS over TCP (a 2-byte length before each message).
//
// Nothing here follows a compression pointer: a question is never
// compressed, and walking a record only needs to know where its name ends.
// Every read is bounds-checked; a malformed message is an outcome, never a
// crash. tests/fuzz/fuzz_dns.cpp fuzzes all of it.
#pragma once

#include "internal.h"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pytun::detail::dns {

inline constexpr std::size_t k_header_size = 12;
/// The largest message (DNS over TCP's 2-byte length).
inline constexpr std::size_t k_max_message = 65535;
/// What a UDP client without EDNS0 takes (RFC 1035 §4.2.1); EDNS0 sizes
/// below it count as it (RFC 6891 §6.2.5).
inline constexpr std::size_t k_classic_udp_size = 512;
/// Queries larger than this are refused (FORMERR): a real query is a few
/// hundred bytes (a name of at most 255, EDNS0 options, perhaps a TSIG).
inline constexpr std::size_t k_max_query = 4096;

enum class Rcode : std::uint8_t {
    noerror = 0,
    formerr = 1,
    servfail = 2,
    nxdomain = 3,
    notimp = 4,
    refused = 5,
};
/// "NOERROR", "SERVFAIL", ...; "RCODE<n>" for others.
std::string rcode_name(unsigned rcode);

enum class Opcode : std::uint8_t { query = 0 };

/// Query types the relay treats specially.
inline constexpr std::uint16_t k_type_opt = 41;
inline constexpr std::uint16_t k_type_ixfr = 251;
inline constexpr std::uint16_t k_type_axfr = 252;

/// The fixed 12-byte header (RFC 1035 §4.1.1).
struct Header {
    std::uint16_t id = 0;
    bool qr = false; ///< a response
    std::uint8_t opcode = 0;
    bool aa = false;
    bool tc = false; ///< truncated
    bool rd = false;
    bool ra = false;
    std::uint8_t rcode = 0; ///< the header's 4 bits (no EDNS0 extension)
    std::uint16_t qdcount = 0;
    std::uint16_t ancount = 0;
    std::uint16_t nscount = 0;
    std::uint16_t arcount = 0;
};
/// Nothing when `message` is shorter than a header.
std::optional<Header> read_header(std::string_view message);

/// The message's ID (0 when shorter than 2 bytes).
std::uint16_t message_id(std::string_view message);
/// Set the ID of a message of at least 2 bytes.
void set_message_id(std::string &message, std::uint16_t id);

/// What the relay learns of a query it forwards.
struct QueryInfo {
    Header header;
    std::size_t question_end = 0; ///< offset after the question: [12, question_end) is its wire form
    std::string name;             ///< "www.example.com." escaped for logs (printable, bounded)
    std::uint16_t qtype = 0;
    std::uint16_t qclass = 0;
    bool edns = false;                        ///< the query carries an OPT record
    std::size_t udp_size = k_classic_udp_size; ///< what the client takes over UDP (>= 512)
};

/// What to do with a message a client sent.
struct QueryCheck {
    enum class Verdict : std::uint8_t {
        forward, ///< a well-formed query: send it to the resolver
        answer,  ///< answer `reply` ourselves (FORMERR, NOTIMP, REFUSED) and forward nothing
        drop,    ///< not worth an answer (shorter than a header, or a response): ignore it
    };
    Verdict verdict = Verdict::drop;
    QueryInfo info;    ///< forward: what the relay needs
    std::string reply; ///< answer: the whole reply
    std::string why;   ///< answer, drop: for the log
};

/// Judges one message from a client (UDP datagram or TCP frame):
/// - shorter than a header, or QR set (a response): drop;
/// - opcode other than QUERY: NOTIMP;
/// - larger than k_max_query, QDCOUNT other than 1, a malformed question
///   (a label over 63 bytes, a name over 255, a compression pointer, the
///   message ends inside it), a malformed OPT record or more than one:
///   FORMERR;
/// - AXFR / IXFR (several answer messages per query; the relay maps one
///   answer to one query): REFUSED;
/// - anything else: forward, with the EDNS0 UDP size it advertises.
QueryCheck check_query(std::string_view message);

/// A reply to `query` made here: its ID, opcode and RD, QR and RA set, the
/// given rcode, and its question when the query has one that parses
/// (QDCOUNT 1), else no question. Empty when `query` is shorter than a
/// header.
std::string make_reply(std::string_view query, Rcode rcode);

/// What the relay checks of an answer from the resolver before passing it
/// on: a response (QR set), and if it has a question, the query's own
/// (name compared without case, type and class equal). `question` is the
/// query's bytes [12, question_end).
bool answer_matches(std::string_view answer, std::string_view question);

/// `answer` as a UDP client that takes `limit` bytes may receive it:
/// unchanged when it fits, else the header with TC set and only the
/// question (and the OPT record when the answer has one and it fits), which
/// tells the client to ask again over TCP (RFC 1035 §4.2.1, RFC 6891 §7).
/// `limit` below 512 counts as 512; the result never exceeds the limit. An
/// answer too malformed to cut is cut to its header (TC set, no records).
std::string truncate_for_udp(std::string_view answer, std::size_t limit);

/// `message` with its 2-byte length in front (DNS over TCP). The caller
/// keeps messages within k_max_message.
std::string frame(std::string_view message);

/// Splits a DNS-over-TCP byte stream into messages, whatever the split of
/// the bytes fed. Holds at most one incomplete frame (65,537 bytes) plus
/// what the last feed brought.
class FrameReader {
public:
    void feed(std::string_view bytes) { buffer_.append(bytes); }
    /// The next whole message (possibly empty: a zero length frame), or
    /// nothing until more bytes arrive.
    std::optional<std::string> next();
    /// Bytes held: an incomplete frame, or frames not taken yet.
    std::size_t buffered() const { return buffer_.size() - start_; }

private:
    std::string buffer_;
    std::size_t start_ = 0;
};

} // namespace pytun::detail::dns
