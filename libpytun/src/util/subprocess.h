// SPDX-License-Identifier: MIT
// run_program: run a helper program (nft, iptables-restore) to completion
// with its input on stdin, collecting what it prints; with a deadline, and
// with default signal handling whatever the calling thread blocks.
#pragma once

#include "internal.h"

#include <chrono>
#include <string>
#include <vector>

namespace pytun::detail {

struct ProgramResult {
    bool started = false; ///< false: not found or could not be run (`output` says why)
    int exit_status = -1; ///< 0-255; -1 when killed by a signal or the deadline
    std::string output;   ///< stdout and stderr together, at most 64 KiB
    bool ok() const { return started && exit_status == 0; }
};

/// Runs `argv` (argv[0] searched in PATH, then /usr/sbin and /sbin, where
/// Debian puts nft and iptables) with `input` on its stdin; kills it after
/// `timeout`. Blocks the calling thread meanwhile.
ProgramResult run_program(const std::vector<std::string> &argv, const std::string &input,
                          std::chrono::milliseconds timeout = std::chrono::seconds(20));

/// The path of a program as run_program finds it; empty when it is not there.
std::string find_program(const std::string &name);

} // namespace pytun::detail
