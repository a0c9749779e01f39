// SPDX-License-Identifier: MIT
// DNS messages: headers, questions, EDNS0 sizes, truncation, TCP framing.
#include "vpn/dns_message.h"

#include <algorithm>

#include "util/text.h"

namespace pytun::detail::dns {
namespace {

constexpr std::size_t k_max_name = 255;  ///< wire length, root byte included (RFC 1035 §2.3.4)
constexpr std::size_t k_max_label = 63;
constexpr std::size_t k_record_fixed = 10; ///< type, class, TTL, RDLENGTH

std::uint16_t read16(std::string_view m, std::size_t at)
{
    return static_cast<std::uint16_t>((static_cast<unsigned char>(m[at]) << 8) | static_cast<unsigned char>(m[at + 1]));
}

void put16(std::string &out, std::uint16_t value)
{
    out.push_back(static_cast<char>(value >> 8));
    out.push_back(static_cast<char>(value & 0xff));
}

void write16(std::string &m, std::size_t at, std::uint16_t value)
{
    m[at] = static_cast<char>(value >> 8);
    m[at + 1] = static_cast<char>(value & 0xff);
}

/// Where the name at `at` ends, or nothing if it is malformed. A compression
/// pointer ends a name (it is not followed); `pointers` says whether one is
/// allowed. `text`, when given, gets the name's labels ("a.b.") before any
/// pointer.
std::optional<std::size_t> skip_name(std::string_view m, std::size_t at, bool pointers, std::string *text = nullptr)
{
    std::size_t length = 0;
    for (;;) {
        if (at >= m.size())
            return std::nullopt;
        const auto label = static_cast<unsigned char>(m[at]);
        if ((label & 0xc0) == 0xc0) {
            if (!pointers || at + 1 >= m.size())
                return std::nullopt;
            return at + 2;
        }
        if (label & 0xc0) // 0x40 and 0x80: no such label types in use
            return std::nullopt;
        length += 1 + label;
        if (length > k_max_name)
            return std::nullopt;
        if (label == 0) {
            if (text && text->empty())
                *text = ".";
            return at + 1;
        }
        if (label > k_max_label || at + 1 + label > m.size())
            return std::nullopt;
        if (text) {
            text->append(m.substr(at + 1, label));
            text->push_back('.');
        }
        at += 1 + label;
    }
}

struct Question {
    std::size_t end = 0;
    std::string name;
    std::uint16_t type = 0;
    std::uint16_t klass = 0;
};

/// The single question at offset 12 (never compressed).
std::optional<Question> read_question(std::string_view m)
{
    Question q;
    auto name_end = skip_name(m, k_header_size, false, &q.name);
    if (!name_end || *name_end + 4 > m.size())
        return std::nullopt;
    q.type = read16(m, *name_end);
    q.klass = read16(m, *name_end + 2);
    q.end = *name_end + 4;
    return q;
}

/// One resource record from `at`: where it ends, and its type and class.
struct Record {
    std::size_t begin = 0;
    std::size_t end = 0;
    std::uint16_t type = 0;
    std::uint16_t klass = 0;
    std::size_t name_end = 0;
};
std::optional<Record> read_record(std::string_view m, std::size_t at)
{
    auto name_end = skip_name(m, at, true);
    if (!name_end || *name_end + k_record_fixed > m.size())
        return std::nullopt;
    Record r;
    r.begin = at;
    r.name_end = *name_end;
    r.type = read16(m, *name_end);
    r.klass = read16(m, *name_end + 2);
    const std::size_t rdlength = read16(m, *name_end + 8);
    r.end = *name_end + k_record_fixed + rdlength;
    if (r.end > m.size())
        return std::nullopt;
    return r;
}

/// The OPT records of the additional section, after the records of the
/// answer and authority sections; nothing when a record is malformed.
struct Records {
    std::optional<Record> opt;
    unsigned opt_count = 0;
    bool opt_misplaced = false; ///< an OPT outside the additional section, or with a name other than the root
};
std::optional<Records> walk_records(std::string_view m, std::size_t at, const Header &h)
{
    Records out;
    const unsigned total = unsigned{h.ancount} + h.nscount + h.arcount;
    for (unsigned i = 0; i < total; ++i) {
        auto r = read_record(m, at);
        if (!r)
            return std::nullopt;
        if (r->type == k_type_opt) {
            const bool in_additional = i >= unsigned{h.ancount} + h.nscount;
            if (!in_additional || r->name_end != r->begin + 1 || m[r->begin] != 0)
                out.opt_misplaced = true;
            ++out.opt_count;
            if (!out.opt)
                out.opt = r;
        }
        at = r->end;
    }
    return out;
}

QueryCheck refusal(std::string_view query, Rcode rcode, std::string why)
{
    QueryCheck c;
    c.verdict = QueryCheck::Verdict::answer;
    c.reply = make_reply(query, rcode);
    c.why = std::move(why);
    return c;
}

char ascii_lower(char c)
{
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

} // namespace

std::string rcode_name(unsigned rcode)
{
    static constexpr const char *k_names[] = {"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED"};
    if (rcode < std::size(k_names))
        return k_names[rcode];
    return "RCODE" + std::to_string(rcode);
}

std::optional<Header> read_header(std::string_view m)
{
    if (m.size() < k_header_size)
        return std::nullopt;
    Header h;
    h.id = read16(m, 0);
    const auto flags1 = static_cast<unsigned char>(m[2]);
    const auto flags2 = static_cast<unsigned char>(m[3]);
    h.qr = flags1 & 0x80;
    h.opcode = static_cast<std::uint8_t>((flags1 >> 3) & 0x0f);
    h.aa = flags1 & 0x04;
    h.tc = flags1 & 0x02;
    h.rd = flags1 & 0x01;
    h.ra = flags2 & 0x80;
    h.rcode = static_cast<std::uint8_t>(flags2 & 0x0f);
    h.qdcount = read16(m, 4);
    h.ancount = read16(m, 6);
    h.nscount = read16(m, 8);
    h.arcount = read16(m, 10);
    return h;
}

std::uint16_t message_id(std::string_view m)
{
    return m.size() < 2 ? 0 : read16(m, 0);
}

void set_message_id(std::string &m, std::uint16_t id)
{
    if (m.size() >= 2)
        write16(m, 0, id);
}

QueryCheck check_query(std::string_view m)
{
    QueryCheck c;
    auto header = read_header(m);
    if (!header) {
        c.why = "a message of " + std::to_string(m.size()) + " bytes, shorter than a DNS header";
        return c;
    }
    if (header->qr) {
        c.why = "a response, not a query";
        return c;
    }
    if (m.size() > k_max_query)
        return refusal(m, Rcode::formerr, "a query of " + std::to_string(m.size()) + " bytes (at most " +
                                              std::to_string(k_max_query) + ")");
    if (header->opcode != static_cast<std::uint8_t>(Opcode::query))
        return refusal(m, Rcode::notimp, "opcode " + std::to_string(header->opcode) + " (only QUERY is relayed)");
    if (header->qdcount != 1)
        return refusal(m, Rcode::formerr, std::to_string(header->qdcount) + " questions (a query has one)");
    auto question = read_question(m);
    if (!question)
        return refusal(m, Rcode::formerr, "a malformed question");
    std::string name = printable(question->name, k_max_name + 8);
    if (question->type == k_type_axfr || question->type == k_type_ixfr)
        return refusal(m, Rcode::refused, "a zone transfer of " + name + " (not relayed)");
    auto records = walk_records(m, question->end, *header);
    if (!records)
        return refusal(m, Rcode::formerr, "a malformed record after the question of " + name);
    if (records->opt_count > 1 || records->opt_misplaced)
        return refusal(m, Rcode::formerr, "a malformed EDNS0 OPT record in the query for " + name);
    c.verdict = QueryCheck::Verdict::forward;
    c.info.header = *header;
    c.info.question_end = question->end;
    c.info.name = std::move(name);
    c.info.qtype = question->type;
    c.info.qclass = question->klass;
    if (records->opt) {
        c.info.edns = true;
        c.info.udp_size = std::max<std::size_t>(k_classic_udp_size, records->opt->klass);
    }
    return c;
}

std::string make_reply(std::string_view query, Rcode rcode)
{
    auto header = read_header(query);
    if (!header)
        return {};
    std::string out;
    put16(out, header->id);
    out.push_back(static_cast<char>(0x80 | (header->opcode << 3) | (header->rd ? 0x01 : 0)));
    out.push_back(static_cast<char>(0x80 | static_cast<unsigned>(rcode))); // RA: we recurse (through the tunnel)
    std::optional<Question> question;
    if (header->qdcount == 1)
        question = read_question(query);
    put16(out, question ? 1 : 0);
    put16(out, 0);
    put16(out, 0);
    put16(out, 0);
    if (question)
        out.append(query.substr(k_header_size, question->end - k_header_size));
    return out;
}

bool answer_matches(std::string_view answer, std::string_view question)
{
    auto header = read_header(answer);
    if (!header || !header->qr)
        return false;
    if (header->qdcount == 0)
        return true; // e.g. FORMERR: nothing to compare
    if (header->qdcount != 1)
        return false;
    auto q = read_question(answer);
    if (!q || q->end - k_header_size != question.size())
        return false;
    const std::string_view theirs = answer.substr(k_header_size, question.size());
    return std::equal(theirs.begin(), theirs.end(), question.begin(),
                      [](char a, char b) { return ascii_lower(a) == ascii_lower(b); });
}

std::string truncate_for_udp(std::string_view answer, std::size_t limit)
{
    limit = std::max(limit, k_classic_udp_size);
    if (answer.size() <= limit)
        return std::string(answer);
    auto header = read_header(answer);
    if (!header)
        return std::string(answer.substr(0, limit)); // unreachable: a header is smaller than any limit
    std::string out(answer.substr(0, k_header_size));
    out[2] = static_cast<char>(out[2] | 0x02); // TC
    write16(out, 6, 0);
    write16(out, 8, 0);
    std::optional<Question> question;
    if (header->qdcount == 1)
        question = read_question(answer);
    std::optional<Record> opt;
    if (question)
        if (auto records = walk_records(answer, question->end, *header))
            opt = records->opt;
    std::size_t size = k_header_size;
    if (question) {
        out.append(answer.substr(k_header_size, question->end - k_header_size));
        size = out.size();
    }
    const bool keep_opt = opt && size + (opt->end - opt->begin) <= limit;
    if (keep_opt)
        out.append(answer.substr(opt->begin, opt->end - opt->begin));
    write16(out, 4, question ? 1 : 0);
    write16(out, 10, keep_opt ? 1 : 0);
    return out;
}

std::string frame(std::string_view message)
{
    std::string out;
    out.reserve(2 + message.size());
    put16(out, static_cast<std::uint16_t>(message.size()));
    out.append(message);
    return out;
}

std::optional<std::string> FrameReader::next()
{
    if (buffered() < 2)
        return std::nullopt;
    const std::size_t length = read16(buffer_, start_);
    if (buffered() < 2 + length)
        return std::nullopt;
    std::string message = buffer_.substr(start_ + 2, length);
    start_ += 2 + length;
    if (start_ == buffer_.size()) {
        buffer_.clear();
        start_ = 0;
    } else if (start_ >= k_max_message) { // keep what was taken from piling up ahead of the rest
        buffer_.erase(0, start_);
        start_ = 0;
    }
    return message;
}

} // namespace pytun::detail::dns
