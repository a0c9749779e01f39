// SPDX-License-Identifier: MIT
// Subscription: the handle a callback registration returns; destroying it
// unsubscribes.
#pragma once

#include <functional>
#include <utility>

namespace pytun {

/// Move-only. When it is destroyed (or reset()), the callback it stands for
/// is removed and, once reset() returns, will not be called again.
class Subscription {
public:
    Subscription() = default;
    explicit Subscription(std::function<void()> cancel) : cancel_(std::move(cancel)) {}
    Subscription(Subscription &&other) noexcept : cancel_(std::exchange(other.cancel_, nullptr)) {}
    Subscription &operator=(Subscription &&other) noexcept
    {
        if (this != &other) {
            reset();
            cancel_ = std::exchange(other.cancel_, nullptr);
        }
        return *this;
    }
    Subscription(const Subscription &) = delete;
    Subscription &operator=(const Subscription &) = delete;
    ~Subscription() { reset(); }

    void reset()
    {
        if (auto cancel = std::exchange(cancel_, nullptr))
            cancel();
    }
    explicit operator bool() const { return static_cast<bool>(cancel_); }

private:
    std::function<void()> cancel_;
};

} // namespace pytun
