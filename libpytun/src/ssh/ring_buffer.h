// SPDX-License-Identifier: MIT
// A fixed-capacity byte ring whose memory is only held while it has data.
#pragma once

#include "internal.h"

#include <sys/mman.h>

#include <cstddef>
#include <memory>
#include <new>
#include <span>

namespace pytun::detail {

class RingBuffer {
public:
    static constexpr std::size_t k_capacity = 128 * 1024;

    bool empty() const { return size_ == 0; }
    bool full() const { return size_ == k_capacity; }
    std::size_t size() const { return size_; }

    /// The contiguous free region after the data (allocates on first use).
    std::span<char> writable()
    {
        if (full())
            return {};
        if (!data_)
            data_.reset(allocate());
        if (size_ == 0)
            head_ = 0; // the largest contiguous region; no pointer into it is pinned (see ChannelStream)
        std::size_t start = head_ + size_;
        if (start < k_capacity)
            return {data_.get() + start, k_capacity - start};
        start -= k_capacity;
        return {data_.get() + start, head_ - start};
    }
    void commit(std::size_t n) { size_ += n; }

    /// The contiguous data at the head.
    std::span<char> readable() const
    {
        if (empty())
            return {};
        std::size_t end = head_ + size_ <= k_capacity ? head_ + size_ : k_capacity;
        return {data_.get() + head_, end - head_};
    }
    void consume(std::size_t n)
    {
        head_ = (head_ + n) % k_capacity;
        size_ -= n;
    }

    /// Give the memory back when empty. Only when no libssh2 call is pinned on
    /// a pointer into it: the caller knows.
    void release_if_empty()
    {
        if (empty()) {
            data_.reset();
            head_ = 0;
        }
    }

private:
    // Buffers come straight from mmap and go straight back: after a burst of
    // connections the memory returns to the system instead of staying in
    // malloc's free lists (a connector idles for months between bursts).
    static char *allocate()
    {
        void *p = ::mmap(nullptr, k_capacity, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            throw std::bad_alloc();
        return static_cast<char *>(p);
    }
    struct Unmap {
        void operator()(char *p) const { ::munmap(p, k_capacity); }
    };
    std::unique_ptr<char, Unmap> data_;
    std::size_t head_ = 0;
    std::size_t size_ = 0;
};

} // namespace pytun::detail
