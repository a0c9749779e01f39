// SPDX-License-Identifier: MIT
// run_command: ask the bastion something by running a command there, as
// `ssh host COMMAND` does: a "session" channel opened in the driver's open
// lane, an "exec" request, its standard output collected (bounded) until
// the channel closes, and its exit status. Nothing to install on the
// server: the VPN mode reads the server's resolver and routes this way.
// Standard error is discarded. Each command holds one of the bastion's
// MaxSessions slots while it runs: run them one after the other.
// All calls on the session's loop thread.
#pragma once

#include "internal.h"

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>

namespace pytun::detail {

class SshSession;

struct CommandLimits {
    std::size_t max_output = 256 * 1024;    ///< more standard output is discarded (`truncated`)
    std::chrono::milliseconds timeout{10000}; ///< from the request to the channel's close
};

struct CommandResult {
    enum class Failure : std::uint8_t {
        none,      ///< the command ran (whatever its exit status)
        refused,   ///< the bastion refused the channel or the exec request (MaxSessions, restrict, ForceCommand ...)
        timed_out, ///< not finished within the limit (the channel is closed)
        lost,      ///< the session or the channel failed
    };
    Failure failure = Failure::none;
    std::string message;    ///< failure: what happened, for the operator
    int exit_status = -1;   ///< -1: none reported (killed by a signal, or failed)
    std::string output;     ///< standard output, at most max_output bytes
    bool truncated = false; ///< the output was longer than max_output
    /// Ran and exited 0.
    bool ok() const { return failure == Failure::none && exit_status == 0; }
};

/// Runs `command` on the bastion of `session` (through the user's shell, as
/// sshd does). `done` runs once, posted on the loop thread, also when the
/// session fails or closes meanwhile. `started`, if set, runs once before
/// it, as soon as sshd has answered the exec request (or the attempt ended
/// without an answer).
void run_command(SshSession &session, std::string command, CommandLimits limits,
                 std::function<void(CommandResult)> done, std::function<void()> started = {});

} // namespace pytun::detail
