// SPDX-License-Identifier: MIT
// A command run on the bastion over an exec channel: its output, its exit.
#include "ssh/command.h"

#include <algorithm>
#include <memory>
#include <utility>

#include <asio.hpp>

#include "ssh/channel_stream.h"
#include "ssh/session.h"
#include "util/text.h"

namespace pytun::detail {
namespace {

using Failure = CommandResult::Failure;

/// The channel's local end: standard output into a bounded string, nothing
/// to send (standard input is closed at once).
class CommandStream final : public ChannelStream {
public:
    CommandStream(asio::io_context &io, std::shared_ptr<spdlog::logger> log, std::string command,
                  CommandLimits limits, std::function<void(CommandResult)> done, std::function<void()> started)
        : ChannelStream(std::move(log)), io_(io), command_(std::move(command)), limits_(limits),
          done_(std::move(done)), started_(std::move(started)), timer_(io)
    {
    }

    /// What the open saw of the exec request: 0, or why it was refused.
    std::shared_ptr<int> exec_rc = std::make_shared<int>(0);

    /// A stop does not wait for the bastion's shell: a slow login script or
    /// a forced command that never ends would hold it for the whole grace
    /// period (the CommandLimits timeout still applies while running).
    bool is_background() const override { return true; }

    void start_timer()
    {
        timer_.expires_after(limits_.timeout);
        timer_.async_wait([this, self = shared_from_this()](const asio::error_code &ec) {
            if (ec || !done_)
                return;
            finish(Failure::timed_out, "'" + printable(command_) + "' did not finish within " +
                                           std::to_string(limits_.timeout.count()) + " ms");
            begin_close("command timed out");
        });
    }

private:
    void on_opened() override
    {
        report_started(); // sshd answered the exec request
        if (*exec_rc != 0) {
            finish(Failure::refused, "the bastion refused to run '" + printable(command_) + "' (libssh2 error " +
                                         std::to_string(*exec_rc) +
                                         "): a forced command, a restricted key or a refusing shell");
            begin_close("exec refused");
            return;
        }
        local_eof(); // the command's standard input ends here
    }

    void on_download() override
    {
        for (std::span<char> data = download_data(); !data.empty(); data = download_data()) {
            const std::size_t room = limits_.max_output - std::min(limits_.max_output, result_.output.size());
            const std::size_t keep = std::min(room, data.size());
            result_.output.append(data.data(), keep);
            if (keep < data.size())
                result_.truncated = true;
            delivered(data.size());
        }
        if (download_ended())
            local_shut();
    }

    void on_upload_space() override {}

    void on_exit(int status, const std::string &signal) override
    {
        exited_ = true;
        result_.exit_status = signal.empty() ? status : -1;
        if (!signal.empty())
            signal_ = printable(signal, 32);
    }

    void on_closed(OpenError error) override
    {
        timer_.cancel();
        if (error != OpenError::none) {
            finish(error == OpenError::other ? Failure::lost : Failure::refused,
                   "no channel to run '" + printable(command_) + "': " + to_string(error));
            return;
        }
        if (!exited_) {
            finish(Failure::lost, "the connection to the bastion ended while '" + printable(command_) + "' ran");
            return;
        }
        if (!signal_.empty())
            result_.message = "'" + printable(command_) + "' was ended by signal " + signal_;
        finish(Failure::none, result_.message);
    }

    void report_started()
    {
        if (started_)
            asio::post(io_, std::exchange(started_, nullptr));
    }

    void finish(Failure failure, std::string message)
    {
        if (!done_)
            return;
        report_started(); // before `done`, also when no answer came
        result_.failure = failure;
        result_.message = std::move(message);
        if (failure != Failure::none) {
            result_.exit_status = -1;
            log().debug("command on the bastion: {}", result_.message);
        }
        asio::post(io_, [done = std::move(done_), result = std::move(result_)]() mutable { done(std::move(result)); });
        done_ = nullptr;
    }

    asio::io_context &io_;
    std::string command_;
    CommandLimits limits_;
    std::function<void(CommandResult)> done_;
    std::function<void()> started_;
    asio::steady_timer timer_;
    CommandResult result_;
    std::string signal_;
    bool exited_ = false;
};

} // namespace

void run_command(SshSession &session, std::string command, CommandLimits limits,
                 std::function<void(CommandResult)> done, std::function<void()> started)
{
    auto stream = std::make_shared<CommandStream>(session.io(), session.logger(), command, limits, std::move(done),
                                                  std::move(started));
    session.log().debug("running '{}' on the bastion", printable(command));
    stream->start_timer();
    // The open makes a "session" channel, then sends "exec" on it: both in
    // the open lane (the exec request's state lives in the new channel, but
    // a channel libssh2 has not handed back yet cannot carry bytes anyway).
    struct Exec {
        LIBSSH2_CHANNEL *channel = nullptr;
        std::string command;
    };
    auto exec = std::make_shared<Exec>();
    exec->command = std::move(command);
    LIBSSH2_SESSION *ssh = session.raw();
    session.open_channel(stream, "open exec channel",
                         [ssh, exec, exec_rc = stream->exec_rc](LIBSSH2_CHANNEL *&channel) -> int {
                             if (!exec->channel) {
                                 exec->channel = libssh2_channel_open_ex(
                                     ssh, "session", sizeof("session") - 1, LIBSSH2_CHANNEL_WINDOW_DEFAULT,
                                     LIBSSH2_CHANNEL_PACKET_DEFAULT, nullptr, 0);
                                 if (!exec->channel)
                                     return libssh2_session_last_errno(ssh);
                                 // Nothing has arrived on the new channel yet: no flush, no send.
                                 libssh2_channel_handle_extended_data2(exec->channel,
                                                                       LIBSSH2_CHANNEL_EXTENDED_DATA_IGNORE);
                             }
                             const int rc = libssh2_channel_process_startup(
                                 exec->channel, "exec", sizeof("exec") - 1, exec->command.data(),
                                 static_cast<unsigned>(exec->command.size()));
                             if (rc == LIBSSH2_ERROR_EAGAIN)
                                 return rc;
                             if (rc != 0 && rc != LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED &&
                                 rc != LIBSSH2_ERROR_CHANNEL_FAILURE)
                                 return rc; // the session is failing: the channel goes with it
                             // Refused or not, the stream gets the channel:
                             // it closes a refused one (on_opened).
                             *exec_rc = rc;
                             channel = exec->channel;
                             return 0;
                         });
}

} // namespace pytun::detail
