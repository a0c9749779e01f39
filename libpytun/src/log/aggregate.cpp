// SPDX-License-Identifier: MIT
// log_aggregated(): counts repeated lines and writes their summaries from a
// thread of its own at the end of each interval.
#include "log/aggregate.h"

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <tuple>
#include <vector>
#include <utility>

#include "log.h"

namespace pytun::detail {

namespace {

using Clock = std::chrono::steady_clock;

class Aggregator {
public:
    void report(spdlog::logger &logger, spdlog::level::level_enum level, const std::string &key,
                const std::string &message)
    {
        std::unique_lock lock(mutex_);
        Entry &e = entries_[{logger.name(), key}];
        if (e.window_end != Clock::time_point{}) {
            ++e.count;
            e.last = message;
            return;
        }
        e.level = level;
        e.window_end = Clock::now() + k_log_aggregate_interval;
        if (!thread_.joinable())
            thread_ = std::thread([this] { run(); });
        wake_.notify_one();
        lock.unlock();
        logger.log(level, "{}", message);
    }

private:
    struct Entry {
        spdlog::level::level_enum level = spdlog::level::warn;
        Clock::time_point window_end{};
        std::uint64_t count = 0;
        std::string last;
    };
    using Key = std::pair<std::string, std::string>;

    // Writes the summaries of the intervals that ended. An interval with
    // none held back ends the aggregation: the next line is written at once.
    void run()
    {
        std::unique_lock lock(mutex_);
        for (;;) {
            Clock::time_point next = Clock::time_point::max();
            const auto now = Clock::now();
            std::vector<std::tuple<std::string, spdlog::level::level_enum, std::string>> lines;
            for (auto it = entries_.begin(); it != entries_.end();) {
                Entry &e = it->second;
                if (e.window_end > now) {
                    next = std::min(next, e.window_end);
                    ++it;
                    continue;
                }
                if (e.count == 0) {
                    it = entries_.erase(it);
                    continue;
                }
                lines.emplace_back(it->first.first, e.level,
                                   std::to_string(e.count) + " more like this in the last " +
                                       std::to_string(k_log_aggregate_interval.count()) + " s (latest: " + e.last +
                                       ")");
                e.count = 0;
                e.window_end = now + k_log_aggregate_interval;
                next = std::min(next, e.window_end);
                ++it;
            }
            if (!lines.empty()) {
                lock.unlock();
                for (auto &[name, level, text] : lines)
                    logger(name)->log(level, "{}", text);
                lock.lock();
                continue;
            }
            if (next == Clock::time_point::max())
                wake_.wait(lock);
            else
                wake_.wait_until(lock, next);
        }
    }

    // A logger of the same name routes to the same file (log.cpp).
    std::shared_ptr<spdlog::logger> logger(const std::string &name)
    {
        std::lock_guard lock(loggers_mutex_);
        auto &slot = loggers_[name];
        if (!slot)
            slot = make_logger(name);
        return slot;
    }

    std::mutex mutex_;
    std::condition_variable wake_;
    std::map<Key, Entry> entries_;
    std::thread thread_;
    std::mutex loggers_mutex_;
    std::map<std::string, std::shared_ptr<spdlog::logger>> loggers_;
};

} // namespace

void log_aggregated(spdlog::logger &logger, spdlog::level::level_enum level, const std::string &key,
                    const std::string &message)
{
    // Never destroyed, its thread never joined: lines may be aggregated
    // until the process exits.
    static Aggregator *aggregator = new Aggregator;
    aggregator->report(logger, level, key, message);
}

} // namespace pytun::detail
