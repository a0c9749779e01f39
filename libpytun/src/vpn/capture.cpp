// SPDX-License-Identifier: MIT
// Installing and removing a capture's rules, journalled; cleaning up after
// crashed runs.
#include "vpn/capture.h"

#include <fstream>
#include <set>
#include <sstream>

#include "util/subprocess.h"

namespace pytun::detail {
namespace {

constexpr int k_cap_net_admin = 12; // linux/capability.h

std::string trimmed(std::string text)
{
    while (!text.empty() && (text.back() == '\n' || text.back() == ' '))
        text.pop_back();
    return text;
}

bool has_ipv6()
{
    std::ifstream in("/proc/net/if_inet6");
    return static_cast<bool>(in);
}

// Removes a capture's iptables chains in both families; the commands fail
// harmlessly for whatever is not there.
void remove_iptables_chains(const std::string &id)
{
    for (const char *program : {"iptables", "ip6tables"}) {
        if (find_program(program).empty())
            continue;
        for (const auto &command : iptables_remove_commands(id)) {
            std::vector<std::string> argv{program};
            argv.insert(argv.end(), command.args.begin(), command.args.end());
            for (int i = 0; i < 64; ++i) // a jump added by several crashed runs goes too
                if (!run_program(argv, {}).ok() || !command.repeat)
                    break;
        }
    }
}

void remove_rules(const std::string &id, CaptureMethod method)
{
    if (method == CaptureMethod::nat)
        remove_iptables_chains(id);
    else
        run_program({"nft", "-f", "-"}, nft_remove_script(id));
}

// The capture ids of pytun's tables and chains in this namespace.
std::set<std::string> installed_ids()
{
    std::set<std::string> ids;
    const std::string table_prefix = "table inet " + nft_table("");
    if (!find_program("nft").empty()) {
        std::istringstream lines(run_program({"nft", "list", "tables"}, {}).output);
        for (std::string line; std::getline(lines, line);)
            if (line.rfind(table_prefix, 0) == 0)
                ids.insert(trimmed(line.substr(table_prefix.size())));
    }
    const std::string chain_prefix = ":" + iptables_chain("");
    for (const char *program : {"iptables-save", "ip6tables-save"}) {
        if (find_program(program).empty())
            continue;
        for (const char *table : {"nat", "filter"}) {
            std::istringstream lines(run_program({program, "-t", table}, {}).output);
            for (std::string line; std::getline(lines, line);)
                if (line.rfind(chain_prefix, 0) == 0)
                    ids.insert(line.substr(chain_prefix.size(), line.find(' ') - chain_prefix.size()));
        }
    }
    return ids;
}

} // namespace

bool has_net_admin()
{
    std::ifstream in("/proc/self/status");
    for (std::string line; std::getline(in, line);)
        if (line.rfind("CapEff:", 0) == 0) {
            const unsigned long long caps = std::strtoull(line.c_str() + 7, nullptr, 16);
            return (caps >> k_cap_net_admin) & 1;
        }
    return false;
}

const char *to_string(CaptureMethod method)
{
    switch (method) {
    case CaptureMethod::automatic: return "auto";
    case CaptureMethod::nft: return "nft";
    case CaptureMethod::nat: return "nat";
    }
    return "auto";
}

std::optional<CaptureMethod> resolve_capture_method(CaptureMethod wanted, std::string &error)
{
    const bool nft = !find_program("nft").empty();
    const bool iptables = !find_program("iptables-restore").empty() && !find_program("iptables").empty();
    if (wanted == CaptureMethod::nft || (wanted == CaptureMethod::automatic && nft)) {
        if (nft)
            return CaptureMethod::nft;
        error = "--method nft: the nft program is not installed (Debian package nftables)";
        return std::nullopt;
    }
    if (iptables)
        return CaptureMethod::nat;
    error = wanted == CaptureMethod::nat
                ? "--method nat: iptables and iptables-restore are not installed (Debian package iptables)"
                : "neither nft nor iptables is installed: install the Debian package nftables (or iptables)";
    return std::nullopt;
}

Capture::Capture(std::string id, std::string tunnel, CaptureMethod method, std::shared_ptr<spdlog::logger> log)
    : log_(std::move(log))
{
    journal_.id = std::move(id);
    journal_.tunnel = std::move(tunnel);
    journal_.method = method;
    journal_.owner = ProcessIdentity::self();
}

Capture::~Capture()
{
    remove();
}

bool Capture::run_nft(const std::string &script, std::string &error)
{
    ProgramResult r = run_program({"nft", "-f", "-"}, script);
    if (r.ok())
        return true;
    error = "nft refused the capture rules: " + trimmed(r.output);
    return false;
}

bool Capture::apply(const CapturePlan &plan, std::string &error)
{
    if (!journalled_) { // the journal names the rules before they exist
        if (!write_journal(journal_, error))
            return false;
        journalled_ = true;
    }
    bool ok = true;
    if (journal_.method == CaptureMethod::nft) {
        const std::string comment = "pytun vpn " + journal_.tunnel + ", pid " + std::to_string(journal_.owner.pid) +
                                    ": remove with pytun vpn --cleanup";
        ok = run_nft(nft_install_script(plan, comment), error);
    } else {
        // iptables-restore changes one table of one family at a time: the
        // old chains go first, then each family's are added whole.
        remove_iptables_chains(journal_.id);
        for (const bool v6 : {false, true}) {
            if (v6 ? !(plan.ipv6 && has_ipv6()) : !plan.ipv4)
                continue;
            const char *program = v6 ? "ip6tables-restore" : "iptables-restore";
            ProgramResult r = run_program({program, "-w", "--noflush"}, iptables_install_script(plan, v6));
            if (!r.ok()) {
                error = std::string(program) + " refused the capture rules: " + trimmed(r.output);
                remove_iptables_chains(journal_.id);
                ok = false;
                break;
            }
        }
    }
    if (ok) {
        installed_ = true;
        return true;
    }
    if (!installed_ || journal_.method == CaptureMethod::nat) {
        installed_ = false;
        remove_journal(journal_);
        journalled_ = false;
    }
    return false;
}

void Capture::remove()
{
    if (installed_) {
        remove_rules(journal_.id, journal_.method);
        installed_ = false;
    }
    if (journalled_) {
        remove_journal(journal_);
        journalled_ = false;
    }
}

std::vector<std::string> cleanup_captures(bool orphans)
{
    std::vector<std::string> done;
    const ProcessIdentity self = ProcessIdentity::self();
    std::set<std::string> live;
    for (const CaptureJournal &journal : read_journals(self.netns)) {
        if (journal.owner.alive()) {
            live.insert(journal.id);
            continue;
        }
        remove_rules(journal.id, journal.method);
        remove_journal(journal);
        done.push_back("removed the capture '" + journal.id + "' (" + to_string(journal.method) + ") of tunnel '" +
                       journal.tunnel + "', left by pytun pid " + std::to_string(journal.owner.pid) +
                       ", which is no longer running");
    }
    if (!orphans)
        return done;
    for (const std::string &id : installed_ids()) {
        if (live.count(id))
            continue;
        remove_rules(id, CaptureMethod::nft);
        remove_rules(id, CaptureMethod::nat);
        done.push_back("removed the capture '" + id + "', which no running pytun owns (no journal)");
    }
    return done;
}

std::optional<CaptureJournal> live_owner(const std::string &id)
{
    const ProcessIdentity self = ProcessIdentity::self();
    for (const CaptureJournal &journal : read_journals(self.netns))
        if (journal.id == id && journal.owner.pid != self.pid && journal.owner.alive())
            return journal;
    return std::nullopt;
}

} // namespace pytun::detail

namespace pytun {

std::string capture_unavailable(CaptureMethod method)
{
    using namespace detail;
    if (!has_net_admin())
        return "the VPN capture changes the firewall: run pytun as root or give it CAP_NET_ADMIN (systemd: "
               "AmbientCapabilities=CAP_NET_ADMIN)";
    std::string error;
    if (!resolve_capture_method(method, error))
        return error;
    return {};
}

std::vector<std::string> remove_stale_captures(bool unjournalled)
{
    return detail::cleanup_captures(unjournalled);
}

} // namespace pytun
