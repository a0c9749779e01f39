// SPDX-License-Identifier: MIT
// Capture: one tunnel's firewall rules (vpn/capture_rules.h) in the kernel,
// through nft (one transaction per change) or iptables-restore, with the
// journal (vpn/journal.h) written before the rules and removed after them.
// Also: which method a machine supports, whether this process may change
// the firewall, and the removal of what crashed pytun processes left.
// Blocking calls (they run a helper program): a few milliseconds each.
#pragma once

#include "internal.h"

#include <optional>
#include <string>
#include <vector>

#include <spdlog/logger.h>

#include <pytun/tunnel.h>

#include "vpn/capture_rules.h"
#include "vpn/journal.h"

namespace pytun::detail {

/// CAP_NET_ADMIN is in this process's effective set (root has it).
bool has_net_admin();
/// The method to use: nft or nat as asked, or for automatic nft when `nft`
/// is installed, else nat; nothing and `error` when the tool is missing.
std::optional<CaptureMethod> resolve_capture_method(CaptureMethod wanted, std::string &error);
/// "nft" or "nat".
const char *to_string(CaptureMethod method);

class Capture {
public:
    /// `method`: resolved (nft or nat). `tunnel`: for the journal.
    Capture(std::string id, std::string tunnel, CaptureMethod method, std::shared_ptr<spdlog::logger> log);
    ~Capture();
    Capture(const Capture &) = delete;
    Capture &operator=(const Capture &) = delete;

    /// Install the rules of `plan`, or replace those installed, in one step:
    /// the journal first, then the rules. False and `error` when they could
    /// not be installed (what was installed before stays).
    bool apply(const CapturePlan &plan, std::string &error);
    /// Remove the rules, then the journal. Idempotent.
    void remove();
    bool installed() const { return installed_; }
    CaptureMethod method() const { return journal_.method; }

private:
    bool run_nft(const std::string &script, std::string &error);
    void remove_iptables();

    CaptureJournal journal_;
    std::shared_ptr<spdlog::logger> log_;
    bool installed_ = false;
    bool journalled_ = false;
};

/// Removes the captures of pytun processes that are gone, in this network
/// namespace (their journals). `orphans`: also pytun tables and chains that
/// no live journal accounts for (netfilter-persistent may have restored
/// them; pytun vpn --cleanup). Captures of running processes are left
/// alone. Returns a line per capture removed.
std::vector<std::string> cleanup_captures(bool orphans);

/// The journal of a running pytun, other than this process, that captures as
/// `id` in this network namespace, if any.
std::optional<CaptureJournal> live_owner(const std::string &id);

} // namespace pytun::detail
