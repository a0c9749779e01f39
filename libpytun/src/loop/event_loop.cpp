// SPDX-License-Identifier: MIT
// EventLoop: an io_context on its own thread, signals blocked.
#include "loop/event_loop.h"

#include <pthread.h>
#include <signal.h>

namespace pytun::detail {

EventLoop::EventLoop() : work_(asio::make_work_guard(io_))
{
    // Block signals before the thread starts, so it inherits the mask.
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &previous);
    thread_ = std::thread([this] { io_.run(); });
    pthread_sigmask(SIG_SETMASK, &previous, nullptr);
}

EventLoop::~EventLoop()
{
    stop();
}

void EventLoop::stop()
{
    work_.reset();
    io_.stop();
    if (thread_.joinable() && !in_loop_thread())
        thread_.join();
}

} // namespace pytun::detail
