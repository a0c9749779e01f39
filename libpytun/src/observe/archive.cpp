// SPDX-License-Identifier: MIT
// Zip archives of the (redacted) configuration and of the logs, written by
// libzip to an unlinked temporary file one input file at a time.
#include "observe/archive.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <sstream>
#include <stdexcept>

#include <zip.h>

#include "observe/redact.h"

namespace pytun::detail {

namespace fs = std::filesystem;

namespace {

// open_for_archive's answer for a directory: skipped without a word, as
// subdirectories always were.
constexpr const char *k_directory = "directory";

// Private-key markers are at most this long; a chunked scan keeps this many
// bytes of the previous chunk so that a marker across two chunks is seen.
constexpr std::size_t k_marker_overlap = 64;
constexpr std::size_t k_chunk = 64 * 1024;

struct FdCloser {
    int fd = -1;
    ~FdCloser()
    {
        if (fd >= 0)
            ::close(fd);
    }
};

ssize_t read_some(int fd, char *buf, std::size_t n)
{
    for (;;) {
        const ssize_t got = ::read(fd, buf, n);
        if (got < 0 && errno == EINTR)
            continue;
        return got;
    }
}

// What the file holds, at most `limit` + 1 bytes (one more tells that it is
// larger): memory follows the file, not the limit.
bool read_bounded(int fd, std::size_t limit, std::string &out)
{
    out.clear();
    char buf[k_chunk];
    while (out.size() <= limit) {
        const ssize_t n = read_some(fd, buf, std::min(sizeof buf, limit + 1 - out.size()));
        if (n < 0)
            return false;
        if (n == 0)
            break;
        out.append(buf, static_cast<std::size_t>(n));
    }
    return true;
}

// The private key in the first `limit` bytes of `fd`, read in chunks; empty when none.
std::string scan_for_private_key(int fd, std::uint64_t limit)
{
    std::string window;
    char buf[k_chunk];
    std::uint64_t done = 0;
    while (done < limit) {
        const ssize_t n = read_some(fd, buf, static_cast<std::size_t>(std::min<std::uint64_t>(sizeof buf, limit - done)));
        if (n <= 0)
            break;
        window.append(buf, static_cast<std::size_t>(n));
        if (auto kind = private_key_kind(window); !kind.empty())
            return kind;
        window.erase(0, window.size() > k_marker_overlap ? window.size() - k_marker_overlap : 0);
        done += static_cast<std::uint64_t>(n);
    }
    return {};
}

// An entry whose bytes are made when libzip asks for them (in zip_close),
// so that one input file at a time is in memory: either made whole by
// `make`, or streamed from `path` (at most `limit` bytes, checked for
// private keys on the way).
struct LazySource {
    std::function<std::string()> make;
    std::string path;
    std::uint64_t limit = 0;
    std::time_t mtime = 0;

    std::string data;
    std::size_t pos = 0;
    int fd = -1;
    std::uint64_t done = 0;
    std::string window;
    zip_error_t error;

    LazySource() { zip_error_init(&error); }
    ~LazySource()
    {
        close();
        zip_error_fini(&error);
    }
    void close()
    {
        if (fd >= 0)
            ::close(fd);
        fd = -1;
        data = std::string();
    }

    zip_int64_t fail(int ze, int se)
    {
        zip_error_set(&error, ze, se);
        return -1;
    }

    zip_int64_t read(char *out, zip_uint64_t len)
    {
        if (make) {
            const std::size_t n = std::min<std::size_t>(static_cast<std::size_t>(len), data.size() - pos);
            std::memcpy(out, data.data() + pos, n);
            pos += n;
            return static_cast<zip_int64_t>(n);
        }
        const ssize_t n = read_some(fd, out, static_cast<std::size_t>(std::min<std::uint64_t>(len, limit - done)));
        if (n < 0)
            return fail(ZIP_ER_READ, errno);
        // Checked before: a key appearing now means the file changed under
        // us. Failing the whole archive is the only safe answer.
        window.append(out, static_cast<std::size_t>(n));
        if (!private_key_kind(window).empty())
            return fail(ZIP_ER_INCONS, 0);
        window.erase(0, window.size() > k_marker_overlap ? window.size() - k_marker_overlap : 0);
        done += static_cast<std::uint64_t>(n);
        return n;
    }

    static zip_int64_t callback(void *state, void *data, zip_uint64_t len, zip_source_cmd_t cmd)
    {
        auto *s = static_cast<LazySource *>(state);
        switch (cmd) {
        case ZIP_SOURCE_OPEN:
            if (s->make) {
                s->data = s->make();
                s->pos = 0;
            } else if (!open_for_archive(s->path, s->fd).empty()) {
                return s->fail(ZIP_ER_OPEN, errno);
            }
            s->done = 0;
            s->window.clear();
            return 0;
        case ZIP_SOURCE_READ:
            return s->read(static_cast<char *>(data), len);
        case ZIP_SOURCE_CLOSE:
            s->close();
            return 0;
        case ZIP_SOURCE_STAT: {
            auto *st = static_cast<zip_stat_t *>(data);
            zip_stat_init(st);
            st->mtime = s->mtime ? s->mtime : std::time(nullptr);
            st->valid |= ZIP_STAT_MTIME;
            return sizeof(*st);
        }
        case ZIP_SOURCE_ERROR:
            return zip_error_to_data(&s->error, data, len);
        case ZIP_SOURCE_FREE:
            delete s;
            return 0;
        case ZIP_SOURCE_SUPPORTS:
            return zip_source_make_command_bitmap(ZIP_SOURCE_OPEN, ZIP_SOURCE_READ, ZIP_SOURCE_CLOSE, ZIP_SOURCE_STAT,
                                                  ZIP_SOURCE_ERROR, ZIP_SOURCE_FREE, -1);
        default:
            return s->fail(ZIP_ER_OPNOTSUPP, 0);
        }
    }
};

// libzip writing into a private temporary directory; finish() hands over
// the result as an open, unlinked file.
class ZipBuilder {
public:
    ZipBuilder()
    {
        std::string tmpl = (fs::temp_directory_path() / "pytun-zip-XXXXXX").string();
        if (!::mkdtemp(tmpl.data()))
            throw std::runtime_error(std::string("cannot create a temporary directory for the zip: ") +
                                     std::strerror(errno));
        dir_ = tmpl;
        path_ = dir_ + "/archive.zip";
        int error = 0;
        archive_ = zip_open(path_.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &error);
        if (!archive_) {
            zip_error_t ze;
            zip_error_init_with_code(&ze, error);
            std::string message = std::string("cannot create the zip: ") + zip_error_strerror(&ze);
            zip_error_fini(&ze);
            cleanup();
            throw std::runtime_error(message);
        }
    }
    ~ZipBuilder()
    {
        if (archive_)
            zip_discard(archive_);
        cleanup();
    }
    ZipBuilder(const ZipBuilder &) = delete;
    ZipBuilder &operator=(const ZipBuilder &) = delete;

    void add(const std::string &name, LazySource *source)
    {
        zip_source_t *zs = zip_source_function(archive_, &LazySource::callback, source);
        if (!zs) {
            delete source;
            throw std::runtime_error("cannot add " + name + " to the zip: " + zip_strerror(archive_));
        }
        if (zip_file_add(archive_, name.c_str(), zs, ZIP_FL_ENC_UTF_8 | ZIP_FL_OVERWRITE) < 0) {
            zip_source_free(zs);
            throw std::runtime_error("cannot add " + name + " to the zip: " + zip_strerror(archive_));
        }
        ++entries_;
    }
    void add_bytes(const std::string &name, std::string content)
    {
        auto *s = new LazySource;
        s->make = [content = std::move(content)] { return content; };
        add(name, s);
    }
    void add_made(const std::string &name, std::function<std::string()> make)
    {
        auto *s = new LazySource;
        s->make = std::move(make);
        add(name, s);
    }
    void add_file(const std::string &name, const std::string &path, std::uint64_t limit, std::time_t mtime)
    {
        auto *s = new LazySource;
        s->path = path;
        s->limit = limit;
        s->mtime = mtime;
        add(name, s);
    }

    ArchiveFile finish()
    {
        if (entries_ == 0) {
            // libzip writes nothing at all for an archive without entries;
            // unzip tools expect the 22-byte end-of-central-directory record.
            zip_discard(archive_);
            archive_ = nullptr;
            const int fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
            const std::string eocd = std::string("PK\x05\x06", 4) + std::string(18, '\0');
            if (fd < 0 || ::write(fd, eocd.data(), eocd.size()) != static_cast<ssize_t>(eocd.size())) {
                if (fd >= 0)
                    ::close(fd);
                throw std::runtime_error("cannot write the zip");
            }
            ::lseek(fd, 0, SEEK_SET);
            cleanup();
            return ArchiveFile(fd, eocd.size());
        }
        if (zip_close(archive_) < 0) {
            std::string message = std::string("cannot write the zip: ") + zip_strerror(archive_);
            throw std::runtime_error(message);
        }
        archive_ = nullptr;
        const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
        struct stat st{};
        if (fd < 0 || ::fstat(fd, &st) != 0) {
            if (fd >= 0)
                ::close(fd);
            throw std::runtime_error("cannot read the zip back");
        }
        cleanup();
        return ArchiveFile(fd, static_cast<std::uint64_t>(st.st_size));
    }

private:
    void cleanup()
    {
        if (dir_.empty())
            return;
        std::error_code ec;
        fs::remove_all(dir_, ec);
        dir_.clear();
    }

    std::string dir_;
    std::string path_;
    zip_t *archive_ = nullptr;
    std::size_t entries_ = 0;
};

std::time_t mtime_of(int fd)
{
    struct stat st{};
    return ::fstat(fd, &st) == 0 ? st.st_mtime : 0;
}

} // namespace

ArchiveFile &ArchiveFile::operator=(ArchiveFile &&other) noexcept
{
    if (this != &other) {
        if (fd_ >= 0)
            ::close(fd_);
        fd_ = std::exchange(other.fd_, -1);
        size_ = other.size_;
    }
    return *this;
}

ArchiveFile::~ArchiveFile()
{
    if (fd_ >= 0)
        ::close(fd_);
}

std::string ArchiveFile::read_all() const
{
    std::string out(static_cast<std::size_t>(size_), '\0');
    std::size_t done = 0;
    while (done < out.size()) {
        const ssize_t n = ::pread(fd_, out.data() + done, out.size() - done, static_cast<off_t>(done));
        if (n <= 0)
            throw std::runtime_error("cannot read the zip");
        done += static_cast<std::size_t>(n);
    }
    return out;
}

std::string open_for_archive(const std::string &path, int &fd)
{
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        if (errno == ELOOP)
            return "symbolic link, not followed";
        return std::string("cannot read (") + std::strerror(errno) + ")";
    }
    struct stat st{};
    std::string why;
    if (::fstat(fd, &st) != 0)
        why = std::string("cannot read (") + std::strerror(errno) + ")";
    else if (S_ISDIR(st.st_mode))
        why = k_directory;
    else if (!S_ISREG(st.st_mode))
        why = "not a regular file (FIFO, device or socket)";
    else if (st.st_uid != ::geteuid() && st.st_uid != 0)
        // A file someone else put here is not ours to publish.
        why = "owned by another user (uid " + std::to_string(st.st_uid) + ", neither pytun's nor root)";
    else if (st.st_nlink > 1)
        // A hard link can bring any file of the same owner from elsewhere
        // (a private key, /etc/shadow for root) into the directory.
        why = "has " + std::to_string(st.st_nlink) + " hard links (could be a file from elsewhere)";
    if (!why.empty()) {
        ::close(fd);
        fd = -1;
        return why;
    }
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    return {};
}

std::string make_zip(const std::vector<std::pair<std::string, std::string>> &entries)
{
    ZipBuilder zip;
    for (const auto &[name, data] : entries)
        zip.add_bytes(name, data);
    return zip.finish().read_all();
}

ArchiveFile make_config_archive(const std::string &main_config_file, const std::string &config_dir,
                                std::size_t max_bytes)
{
    ZipBuilder zip;
    std::ostringstream report;
    report << "pytun /configs: what was left out or changed.\n"
              "Secret values (passwords, tokens, signatures) are replaced by "
           << k_redacted_marker
           << ".\nPrivate keys (recognised by their content, whatever the file is called), binary files\n"
              "and symbolic links are never included.\n\n";
    std::size_t total = 0;
    std::size_t omitted = 0, redacted = 0;

    // The content that may be shipped, or why not.
    auto examine = [](int fd, std::string &content) -> std::string {
        if (!read_bounded(fd, k_archive_max_config_file, content))
            return "cannot read";
        if (content.size() > k_archive_max_config_file)
            return "larger than " + std::to_string(k_archive_max_config_file >> 10) + " KiB (not a config file)";
        if (auto kind = private_key_kind(content); !kind.empty())
            return "contains a private key (" + kind + ")";
        if (looks_binary(content))
            return "binary file (could be a key in DER form)";
        return {};
    };

    auto add = [&](const fs::path &path, const std::string &name) {
        int fd = -1;
        std::string why = open_for_archive(path.string(), fd);
        FdCloser closer{fd};
        std::string content;
        if (why.empty())
            why = examine(fd, content);
        if (why.empty() && content.size() > (max_bytes > total ? max_bytes - total : 0))
            why = "archive size limit reached";
        if (why == k_directory)
            return;
        if (!why.empty()) {
            report << name << ": left out: " << why << '\n';
            ++omitted;
            return;
        }
        std::vector<Redaction> redactions;
        total += redact_config(content, redactions).size();
        for (const auto &r : redactions) {
            if (r.key.empty())
                report << name << ':' << r.line << ": line of " << r.line_bytes << " bytes replaced by "
                       << k_redacted_marker << " (longer than " << k_redact_max_line << " bytes)\n";
            else
                report << name << ':' << r.line << ": " << r.key << ": value replaced by " << k_redacted_marker
                       << '\n';
            ++redacted;
        }
        // Read, checked and redacted again when libzip writes the entry: one
        // file in memory at a time. Should the file have changed into
        // something not to ship, the entry is empty.
        zip.add_made(name, [path, examine] {
            int again = -1;
            if (!open_for_archive(path.string(), again).empty())
                return std::string();
            FdCloser guard{again};
            std::string fresh;
            if (!examine(again, fresh).empty())
                return std::string();
            std::vector<Redaction> ignored;
            return redact_config(fresh, ignored);
        });
    };

    fs::path main_path;
    if (!main_config_file.empty()) {
        main_path = fs::path(main_config_file).lexically_normal();
        add(main_path, main_path.filename().string());
    }
    if (!config_dir.empty()) {
        fs::path dir = fs::path(config_dir).lexically_normal();
        std::string prefix = dir.filename().string();
        if (prefix.empty())
            prefix = dir.parent_path().filename().string();
        if (prefix.empty())
            prefix = "configs";
        std::error_code ec;
        std::vector<fs::path> files;
        std::size_t not_examined = 0;
        for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
            if (files.size() < k_archive_max_files)
                files.push_back(it->path());
            else
                ++not_examined;
        }
        if (ec)
            report << prefix << "/: cannot list the directory (" << ec.message() << ")\n";
        if (not_examined)
            report << prefix << "/: " << not_examined << " more files not examined (more than "
                   << k_archive_max_files << " in the directory)\n";
        std::sort(files.begin(), files.end());
        for (const auto &file : files) {
            if (file.lexically_normal() == main_path)
                continue;
            add(file, prefix + "/" + file.filename().string());
        }
    }
    if (omitted == 0 && redacted == 0)
        report << "Nothing was left out or redacted.\n";
    zip.add_bytes(k_redaction_list_name, report.str());
    return zip.finish();
}

ArchiveFile make_log_archive(const std::string &log_dir, std::size_t max_bytes)
{
    struct LogFile {
        fs::path path;
        std::time_t mtime = 0;
    };
    std::vector<LogFile> logs;
    std::size_t not_examined = 0;
    std::error_code ec;
    if (!log_dir.empty()) {
        for (fs::directory_iterator it(log_dir, ec), end; !ec && it != end; it.increment(ec)) {
            if (it->path().extension() != ".log")
                continue;
            struct stat st{};
            // Regular files only: a symbolic link named x.log could point at a secret.
            if (::lstat(it->path().c_str(), &st) != 0 || !S_ISREG(st.st_mode))
                continue;
            if (logs.size() < k_archive_max_files)
                logs.push_back({it->path(), st.st_mtime});
            else
                ++not_examined;
        }
    }
    // Newest first, so that the size limit drops old rotated files.
    std::sort(logs.begin(), logs.end(), [](const LogFile &a, const LogFile &b) { return a.mtime > b.mtime; });
    ZipBuilder zip;
    std::vector<std::string> skipped;
    std::uint64_t total = 0;
    for (const auto &log : logs) {
        const std::string name = log.path.filename().string();
        int fd = -1;
        std::string why = open_for_archive(log.path.string(), fd);
        FdCloser closer{fd};
        struct stat st{};
        if (why.empty() && ::fstat(fd, &st) != 0)
            why = "cannot read";
        const std::uint64_t size = why.empty() ? static_cast<std::uint64_t>(st.st_size) : 0;
        if (why.empty() && size > (max_bytes > total ? max_bytes - total : 0))
            why = "archive size limit reached";
        if (why.empty()) {
            // Logs never hold keys; a file here that does is not a log.
            if (auto kind = scan_for_private_key(fd, size); !kind.empty())
                why = "contains a private key (" + kind + ")";
        }
        if (why == k_directory)
            continue;
        if (!why.empty()) {
            skipped.push_back(name + ": " + why);
            continue;
        }
        total += size;
        zip.add_file(name, log.path.string(), size, mtime_of(fd));
    }
    if (not_examined)
        skipped.push_back(std::to_string(not_examined) + " more files not examined (more than " +
                          std::to_string(k_archive_max_files) + " in the directory)");
    if (!skipped.empty()) {
        std::string note = "Left out:\n";
        for (const auto &line : skipped)
            note += line + "\n";
        zip.add_bytes("LEFT_OUT.txt", std::move(note));
    }
    return zip.finish();
}

} // namespace pytun::detail
