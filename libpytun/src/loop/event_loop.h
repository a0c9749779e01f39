// SPDX-License-Identifier: MIT
// EventLoop: an asio::io_context with a thread of its own that runs it.
#pragma once

#include "internal.h"

#include <thread>

#include <asio.hpp>

namespace pytun::detail {

/// The thread blocks every signal: libssh2 1.10 treats EINTR as fatal, and
/// signals belong to the application's main thread.
class EventLoop {
public:
    EventLoop();
    ~EventLoop();
    EventLoop(const EventLoop &) = delete;
    EventLoop &operator=(const EventLoop &) = delete;

    asio::io_context &io() { return io_; }
    /// Stop running handlers and join the thread (idempotent). Handlers still
    /// queued are destroyed with the io_context.
    void stop();
    bool in_loop_thread() const { return std::this_thread::get_id() == thread_.get_id(); }

private:
    asio::io_context io_{1};
    asio::executor_work_guard<asio::io_context::executor_type> work_;
    std::thread thread_;
};

} // namespace pytun::detail
