// SPDX-License-Identifier: MIT
// Libssh2Heap: the allocator one libssh2 session uses, which remembers every
// block it handed out, so that what libssh2 forgets to free is freed with the
// session. libssh2 1.10 forgets some on paths a long-running connector
// takes: a session freed while its key exchange waits for the server keeps
// the curve25519 key pair (kex.c frees it only when the exchange ends), and
// a forward cancelled on a dead transport keeps its packet. Each is a few
// bytes, once per reconnect, for months.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <unordered_map>

namespace pytun::detail {

class Libssh2Heap {
public:
    Libssh2Heap() = default;
    Libssh2Heap(const Libssh2Heap &) = delete;
    Libssh2Heap &operator=(const Libssh2Heap &) = delete;
    ~Libssh2Heap() { release_all(); }

    void *allocate(std::size_t size)
    {
        void *block = std::malloc(size);
        if (block)
            blocks_.emplace(block, size);
        return block;
    }

    /// Blocks this heap did not hand out (libssh2 frees the signature our
    /// RSA callback returns, made with malloc) are freed all the same.
    void release(void *block)
    {
        if (!block)
            return;
        blocks_.erase(block);
        std::free(block);
    }

    void *reallocate(void *block, std::size_t size)
    {
        if (!block)
            return allocate(size);
        void *moved = std::realloc(block, size);
        if (!moved)
            return nullptr; // the old block stays, and stays ours
        blocks_.erase(block);
        blocks_.emplace(moved, size);
        return moved;
    }

    struct Leftover {
        std::size_t blocks = 0;
        std::size_t bytes = 0;
    };
    /// Free every block still out. Call after libssh2_session_free, when
    /// nothing can reach them any more.
    Leftover release_all()
    {
        Leftover left;
        for (const auto &[block, size] : blocks_) {
            ++left.blocks;
            left.bytes += size;
            std::free(block);
        }
        blocks_.clear();
        return left;
    }

    std::size_t outstanding() const { return blocks_.size(); }

private:
    std::unordered_map<void *, std::size_t> blocks_;
};

} // namespace pytun::detail
