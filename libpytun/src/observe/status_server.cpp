// SPDX-License-Identifier: MIT
// StatusServer: routes, access control and lifecycle of the inspection API.
#include <pytun/status_server.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <mutex>

#include <openssl/crypto.h>

#include <pytun/alerter.h>
#include <pytun/manager.h>
#include <pytun/resources.h>
#include <pytun/version.h>

#include "log.h"
#include "observe/archive.h"
#include "observe/http_guard.h"
#include "observe/render.h"
#include "util/fd_budget.h"

namespace pytun {

namespace {

bool is_loopback_address(const std::string &address)
{
    if (address == "localhost")
        return true;
    in_addr v4{};
    if (::inet_pton(AF_INET, address.c_str(), &v4) == 1)
        return (ntohl(v4.s_addr) >> 24) == 127;
    in6_addr v6{};
    if (::inet_pton(AF_INET6, address.c_str(), &v6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&v6);
    return false;
}

// Why bind failed, found by trying the same bind ourselves: the packaged
// httplib only says "false".
std::string bind_failure(const std::string &address, std::uint16_t port, std::error_code &ec)
{
    const std::string where = address + ":" + std::to_string(port);
    sockaddr_storage storage{};
    socklen_t len = 0;
    int family = AF_INET;
    if (auto *in = reinterpret_cast<sockaddr_in *>(&storage); ::inet_pton(AF_INET, address.c_str(), &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
        len = sizeof(sockaddr_in);
    } else if (auto *in6 = reinterpret_cast<sockaddr_in6 *>(&storage);
               ::inet_pton(AF_INET6, address.c_str(), &in6->sin6_addr) == 1) {
        family = AF_INET6;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        len = sizeof(sockaddr_in6);
    } else {
        ec = std::make_error_code(std::errc::invalid_argument);
        return "inspection API: cannot listen on " + where +
               ": not a numeric IP address (use 127.0.0.1, 0.0.0.0 or an address of this host)";
    }
    int fd = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int err = ::bind(fd, reinterpret_cast<sockaddr *>(&storage), len) == 0 ? 0 : errno;
    ::close(fd);
    ec = std::error_code(err ? err : EADDRINUSE, std::generic_category());
    if (ec == std::errc::address_in_use)
        return "inspection API: port " + std::to_string(port) + " on " + address +
               " is already in use by another program (another pytun?); stop it or set inspection_port to a free port";
    if (ec == std::errc::permission_denied)
        return "inspection API: not allowed to listen on " + where +
               " (ports below 1024 need privileges); choose inspection_port >= 1024";
    if (ec == std::errc::address_not_available)
        return "inspection API: " + address + " is not an address of this host; cannot listen on " + where;
    return "inspection API: cannot listen on " + where + ": " + ec.message();
}

} // namespace

struct StatusServer::Impl {
    StatusServerOptions options;
    const TunnelManager &manager;
    const Alerter *alerter;
    std::shared_ptr<spdlog::logger> log = detail::make_logger("http");
    detail::RenderContext ctx;
    bool loopback = true;

    std::mutex mutex;                    // start/stop
    std::unique_ptr<detail::GuardedServer> server;
    std::atomic<int> archives_building{0};
    std::int64_t reserved_fds = 0;
    std::atomic<bool> running{false};
    std::atomic<std::uint16_t> bound_port{0};

    Impl(StatusServerOptions o, const TunnelManager &m, const Alerter *a)
        : options(std::move(o)), manager(m), alerter(a)
    {
        ctx.tunnel_manager_id = options.tunnel_manager_id;
        ctx.version = version();
        ctx.mac_address = options.mac_address;
        ctx.created_at = options.created_at;
        loopback = is_loopback_address(options.bind_address);
    }

    detail::Snapshot snapshot() const
    {
        detail::Snapshot s;
        s.tunnels = manager.status();
        if (alerter)
            s.alerts = alerter->stats();
        s.descriptors = descriptor_stats();
        s.now = std::chrono::system_clock::now();
        return s;
    }

    void json(httplib::Response &res, int status, std::string body) const
    {
        res.status = status;
        res.set_content(std::move(body), "application/json");
    }

    void error(httplib::Response &res, int status, const std::string &message) const
    {
        json(res, status, detail::render_error(ctx, message));
    }

    bool token_matches(const httplib::Request &req) const
    {
        const std::string header = req.get_header_value("Authorization");
        static constexpr std::string_view scheme = "Bearer ";
        if (header.size() <= scheme.size() || header.compare(0, scheme.size(), scheme) != 0)
            return false;
        const std::string_view given = std::string_view(header).substr(scheme.size());
        const std::string &token = options.token;
        // Constant time, so the token cannot be guessed byte by byte.
        return given.size() == token.size() && CRYPTO_memcmp(given.data(), token.data(), token.size()) == 0;
    }

    // Loopback binds answer everyone who can reach them (as the original).
    // Elsewhere the archives need the token, and a configured token guards
    // every endpoint.
    bool allowed(const httplib::Request &req, httplib::Response &res) const
    {
        if (loopback)
            return true;
        const bool archive = req.path == "/configs" || req.path == "/logs";
        if (options.token.empty()) {
            if (!archive)
                return true;
            error(res, 403,
                  "the archives are not served on " + options.bind_address +
                      " without inspection_token; set inspection_token and send Authorization: Bearer <token>");
            return false;
        }
        if (token_matches(req))
            return true;
        res.set_header("WWW-Authenticate", "Bearer realm=\"pytun\"");
        error(res, 403, "missing or wrong Authorization: Bearer token");
        return false;
    }

    // Streams the archive from its (unlinked) file: the reply costs one
    // 64 KiB buffer, not the archive's size.
    void zip(httplib::Response &res, detail::ArchiveFile archive, const char *filename) const
    {
        res.status = 200;
        res.set_header("Content-Disposition", std::string("attachment; filename=\"") + filename + "\"");
        auto file = std::make_shared<detail::ArchiveFile>(std::move(archive));
        res.set_content_provider(
            static_cast<std::size_t>(file->size()), "application/zip",
            [file](std::size_t offset, std::size_t length, httplib::DataSink &sink) {
                char buf[64 * 1024];
                const ssize_t n =
                    ::pread(file->fd(), buf, std::min(length, sizeof buf), static_cast<off_t>(offset));
                return n > 0 && sink.write(buf, static_cast<std::size_t>(n));
            },
            [file](bool) {});
    }

    // Archives are built one or two at a time (CPU, disk): never by every
    // worker, so /healthz and /status still find one free.
    template <typename Build>
    void archive(httplib::Response &res, const char *filename, Build build)
    {
        const int limit = static_cast<int>(std::max(1u, options.threads / 2));
        if (archives_building.fetch_add(1) >= limit) {
            archives_building.fetch_sub(1);
            res.set_header("Retry-After", "5");
            error(res, 503, "another archive is being built; try again in a few seconds");
            return;
        }
        struct Done {
            std::atomic<int> &count;
            ~Done() { count.fetch_sub(1); }
        } done{archives_building};
        zip(res, build(), filename);
    }

    void routes(detail::GuardedServer &s)
    {
        s.set_default_headers({{"Server", "Pytun Introspection web server/" + version()},
                               {"Cache-Control", "no-store"},
                               {"X-Content-Type-Options", "nosniff"}});
        s.set_pre_routing_handler([this](const httplib::Request &req, httplib::Response &res) {
            return allowed(req, res) ? httplib::Server::HandlerResponse::Unhandled
                                     : httplib::Server::HandlerResponse::Handled;
        });
        s.Get("/", [this](const httplib::Request &, httplib::Response &res) { json(res, 200, detail::render_ping(ctx)); });
        s.Get("/status", [this](const httplib::Request &, httplib::Response &res) {
            json(res, 200, detail::render_status(ctx, snapshot()));
        });
        s.Get("/configs", [this](const httplib::Request &, httplib::Response &res) {
            archive(res, "configs.zip", [this] {
                return detail::make_config_archive(options.main_config_file, options.config_dir,
                                                   options.max_archive_bytes);
            });
        });
        s.Get("/logs", [this](const httplib::Request &, httplib::Response &res) {
            archive(res, "logs.zip",
                    [this] { return detail::make_log_archive(options.log_dir, options.max_archive_bytes); });
        });
        s.Get("/metrics", [this](const httplib::Request &, httplib::Response &res) {
            res.set_content(detail::render_metrics(ctx, snapshot(), detail::read_process_metrics()),
                            "text/plain; version=0.0.4; charset=utf-8");
        });
        s.Get("/healthz", [this](const httplib::Request &, httplib::Response &res) {
            json(res, 200, detail::render_healthz(ctx, snapshot()));
        });
        s.Get("/readyz", [this](const httplib::Request &, httplib::Response &res) {
            bool ready = false;
            std::string body = detail::render_readyz(ctx, snapshot(), ready);
            json(res, ready ? 200 : 503, std::move(body));
        });
        s.Get("/api/v1/tunnels", [this](const httplib::Request &, httplib::Response &res) {
            json(res, 200, detail::render_tunnels(ctx, snapshot()));
        });
        s.Get("/ui", [this](const httplib::Request &, httplib::Response &res) {
            // The page needs nothing but itself and same-origin fetches.
            res.set_header("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; "
                                                      "style-src 'unsafe-inline'; connect-src 'self'; img-src data:");
            res.set_header("X-Frame-Options", "DENY");
            res.set_content(detail::render_dashboard(ctx, snapshot()), "text/html; charset=utf-8");
        });
        // The original answered every other path like "/".
        s.Get(".*", [this](const httplib::Request &, httplib::Response &res) { json(res, 200, detail::render_ping(ctx)); });

        s.set_error_handler([this](const httplib::Request &req, httplib::Response &res) {
            if (!res.body.empty())
                return;
            if (res.status == 404 && req.method != "GET" && req.method != "HEAD") {
                res.status = 405;
                res.set_header("Allow", "GET, HEAD");
                error(res, 405, "method " + req.method + " not allowed; the API is read-only (GET)");
                return;
            }
            const int status = res.status;
            error(res, status, detail::reason_phrase(status));
        });
        s.set_exception_handler([this](const httplib::Request &req, httplib::Response &res, std::exception_ptr ep) {
            std::string what = "internal error";
            try {
                if (ep)
                    std::rethrow_exception(ep);
            } catch (const std::exception &e) {
                what = e.what();
            } catch (...) {
            }
            log->error("{} {}: {}", req.method, req.path, what);
            error(res, 500, what);
        });
    }
};

StatusServer::StatusServer(StatusServerOptions options, const TunnelManager &manager, const Alerter *alerter)
    : impl_(std::make_unique<Impl>(std::move(options), manager, alerter))
{
}

StatusServer::~StatusServer()
{
    stop();
}

std::error_code StatusServer::start(std::string &message)
{
    Impl &d = *impl_;
    std::lock_guard lock(d.mutex);
    if (d.running) {
        message = "inspection API already running on port " + std::to_string(d.bound_port.load());
        return {};
    }
    detail::GuardLimits limits;
    limits.request_timeout = d.options.request_timeout;
    limits.max_header_bytes = d.options.max_header_bytes;
    limits.max_headers = d.options.max_headers;
    limits.max_target_length = d.options.max_target_length;
    limits.max_pending = d.options.max_pending;
    limits.max_queued = std::min<std::size_t>(d.options.max_pending, 64);
    limits.threads = std::max(1u, d.options.threads);
    auto server = std::make_unique<detail::GuardedServer>(
        limits, [&d](int, const std::string &reason) { return detail::render_error(d.ctx, reason); });
    server->set_payload_max_length(d.options.max_body_bytes);
    server->set_read_timeout(std::chrono::duration_cast<std::chrono::seconds>(d.options.request_timeout).count() + 1);
    server->set_keep_alive_max_count(1);
    d.routes(*server);

    std::error_code bind_error;
    const std::uint16_t port = server->bind(d.options.bind_address, d.options.port, bind_error);
    if (port == 0) {
        std::error_code ec;
        message = bind_failure(d.options.bind_address, d.options.port, ec);
        d.log->error("{}", message);
        return ec;
    }
    d.bound_port = port;
    d.server = std::move(server);
    // Its connections are kept out of what forwarded connections may use.
    d.reserved_fds = static_cast<std::int64_t>(limits.max_pending + limits.max_queued + limits.threads +
                                               detail::GuardLimits::k_max_closing);
    detail::FdBudget::instance().reserve(d.reserved_fds);
    d.server->start();
    d.running = true;

    message = "inspection API listening on " + d.options.bind_address + ":" + std::to_string(port);
    d.log->info("{}", message);
    if (!d.loopback && d.options.token.empty())
        d.log->warn("inspection API on {} (not localhost) without inspection_token: /configs and /logs answer 403; "
                    "set inspection_token to serve them (it then protects every endpoint)",
                    d.options.bind_address);
    else if (!d.loopback)
        d.log->info("inspection API on {} (not localhost): every endpoint requires Authorization: Bearer <token>",
                    d.options.bind_address);
    return {};
}

void StatusServer::stop()
{
    Impl &d = *impl_;
    std::lock_guard lock(d.mutex);
    if (!d.server)
        return;
    d.server->stop();
    detail::FdBudget::instance().reserve(-d.reserved_fds);
    d.reserved_fds = 0;
    d.server.reset();
    d.running = false;
}

std::uint16_t StatusServer::port() const
{
    return impl_->bound_port;
}

bool StatusServer::running() const
{
    return impl_->running;
}

bool StatusServer::requires_token() const
{
    return !impl_->loopback;
}

} // namespace pytun
