// SPDX-License-Identifier: MIT
// CallbackList: thread-safe registration of callbacks behind Subscription
// handles. Once a Subscription's reset() returns, its callback is not running
// and will not run again (unless reset() is called from inside the callback
// itself, where waiting would deadlock: then it just will not run again).
#pragma once

#include "internal.h"

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <pytun/subscription.h>

namespace pytun::detail {

template <typename... Args>
class CallbackList {
public:
    using Callback = std::function<void(Args...)>;

    Subscription add(Callback callback)
    {
        auto entry = std::make_shared<Entry>();
        entry->callback = std::move(callback);
        {
            std::lock_guard lock(state_->mutex);
            state_->entries.push_back(entry);
        }
        std::weak_ptr<State> weak_state = state_;
        return Subscription([weak_state, entry] {
            if (auto state = weak_state.lock()) {
                std::lock_guard lock(state->mutex);
                std::erase(state->entries, entry);
            }
            if (entry->calling.load() == std::this_thread::get_id()) {
                entry->active = false; // inside the callback: do not wait for ourselves
                return;
            }
            std::lock_guard call(entry->call_mutex);
            entry->active = false;
        });
    }

    void call(Args... args) const
    {
        std::vector<std::shared_ptr<Entry>> entries;
        {
            std::lock_guard lock(state_->mutex);
            entries = state_->entries;
        }
        for (const auto &entry : entries) {
            std::lock_guard call(entry->call_mutex);
            if (!entry->active)
                continue;
            entry->calling = std::this_thread::get_id();
            entry->callback(args...);
            entry->calling = std::thread::id();
        }
    }

private:
    struct Entry {
        Callback callback;
        std::mutex call_mutex;
        bool active = true;
        std::atomic<std::thread::id> calling{};
    };
    struct State {
        std::mutex mutex;
        std::vector<std::shared_ptr<Entry>> entries;
    };
    std::shared_ptr<State> state_ = std::make_shared<State>();
};

} // namespace pytun::detail
