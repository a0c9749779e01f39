// SPDX-License-Identifier: MIT
// In-memory zip archives of the (redacted) configuration and of the logs.
#include "observe/archive.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>

#include <zip.h>

#include "observe/redact.h"

namespace pytun::detail {

namespace fs = std::filesystem;

namespace {

struct ZipSourceDeleter {
    void operator()(zip_source_t *s) const { zip_source_free(s); }
};
using ZipSource = std::unique_ptr<zip_source_t, ZipSourceDeleter>;

[[noreturn]] void fail(const std::string &what, zip_error_t *error)
{
    std::string message = what + ": " + zip_error_strerror(error);
    zip_error_fini(error);
    throw std::runtime_error(message);
}

// Reads at most `limit` + 1 bytes so that an oversized file is noticed
// without reading it whole.
bool read_file(const fs::path &path, std::size_t limit, std::string &out)
{
    std::ifstream in(path, std::ios::binary);
    if (!in)
        return false;
    out.assign(limit + 1, '\0');
    in.read(out.data(), static_cast<std::streamsize>(out.size()));
    out.resize(static_cast<std::size_t>(in.gcount()));
    return !in.bad();
}

} // namespace

std::string make_zip(const std::vector<std::pair<std::string, std::string>> &entries)
{
    // libzip writes nothing at all for an archive without entries; unzip
    // tools expect the 22-byte end-of-central-directory record.
    if (entries.empty())
        return std::string("PK\x05\x06", 4) + std::string(18, '\0');
    zip_error_t error;
    zip_error_init(&error);
    ZipSource buffer(zip_source_buffer_create(nullptr, 0, 0, &error));
    if (!buffer)
        fail("cannot create the zip buffer", &error);
    // zip_close() frees the source it writes to unless we hold a reference:
    // we read the result from it afterwards.
    zip_source_keep(buffer.get());
    zip_t *archive = zip_open_from_source(buffer.get(), ZIP_TRUNCATE, &error);
    if (!archive)
        fail("cannot open the zip buffer", &error);
    for (const auto &[name, data] : entries) {
        // The data outlives zip_close() (entries is the caller's), so libzip
        // may reference it without copying (freep = 0).
        zip_source_t *source = zip_source_buffer(archive, data.data(), data.size(), 0);
        if (!source || zip_file_add(archive, name.c_str(), source, ZIP_FL_ENC_UTF_8 | ZIP_FL_OVERWRITE) < 0) {
            if (source)
                zip_source_free(source);
            std::string message = "cannot add " + name + " to the zip: " + zip_strerror(archive);
            zip_discard(archive);
            throw std::runtime_error(message);
        }
    }
    if (zip_close(archive) < 0) {
        std::string message = std::string("cannot write the zip: ") + zip_strerror(archive);
        zip_discard(archive);
        throw std::runtime_error(message);
    }
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_source_stat(buffer.get(), &st) < 0 || zip_source_open(buffer.get()) < 0)
        throw std::runtime_error("cannot read the zip buffer");
    std::string out(static_cast<std::size_t>(st.size), '\0');
    zip_int64_t got = out.empty() ? 0 : zip_source_read(buffer.get(), out.data(), out.size());
    zip_source_close(buffer.get());
    if (got < 0 || static_cast<std::size_t>(got) != out.size())
        throw std::runtime_error("cannot read the zip buffer");
    return out;
}

std::string make_config_archive(const std::string &main_config_file, const std::string &config_dir,
                                std::size_t max_bytes)
{
    std::vector<std::pair<std::string, std::string>> entries;
    std::ostringstream report;
    report << "pytun /configs: what was left out or changed.\n"
              "Secret values (passwords, tokens, signatures) are replaced by "
           << k_redacted_marker
           << ".\nPrivate keys (recognised by their content, whatever the file is called), binary files\n"
              "and symbolic links are never included.\n\n";
    std::size_t total = 0;
    std::size_t omitted = 0, redacted = 0;

    auto add = [&](const fs::path &path, const std::string &name) {
        std::error_code ec;
        auto status = fs::symlink_status(path, ec);
        if (ec) {
            report << name << ": left out: cannot read (" << ec.message() << ")\n";
            ++omitted;
            return;
        }
        if (fs::is_symlink(status)) {
            // A link could point anywhere (another user's key, /etc/shadow).
            report << name << ": left out: symbolic link, not followed\n";
            ++omitted;
            return;
        }
        if (!fs::is_regular_file(status))
            return;
        std::string content;
        const std::size_t budget = max_bytes > total ? max_bytes - total : 0;
        if (!read_file(path, budget, content)) {
            report << name << ": left out: cannot read\n";
            ++omitted;
            return;
        }
        if (content.size() > budget) {
            report << name << ": left out: archive size limit reached\n";
            ++omitted;
            return;
        }
        if (auto kind = private_key_kind(content); !kind.empty()) {
            report << name << ": left out: contains a private key (" << kind << ")\n";
            ++omitted;
            return;
        }
        if (looks_binary(content)) {
            report << name << ": left out: binary file (could be a key in DER form)\n";
            ++omitted;
            return;
        }
        std::vector<Redaction> redactions;
        std::string clean = redact_config(content, redactions);
        for (const auto &r : redactions) {
            report << name << ':' << r.line << ": " << r.key << ": value replaced by " << k_redacted_marker << '\n';
            ++redacted;
        }
        total += clean.size();
        entries.emplace_back(name, std::move(clean));
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
        for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
            files.push_back(it->path());
        if (ec)
            report << prefix << "/: cannot list the directory (" << ec.message() << ")\n";
        std::sort(files.begin(), files.end());
        for (const auto &file : files) {
            if (file.lexically_normal() == main_path)
                continue;
            add(file, prefix + "/" + file.filename().string());
        }
    }
    if (omitted == 0 && redacted == 0)
        report << "Nothing was left out or redacted.\n";
    entries.emplace_back(k_redaction_list_name, report.str());
    return make_zip(entries);
}

std::string make_log_archive(const std::string &log_dir, std::size_t max_bytes)
{
    struct LogFile {
        fs::path path;
        fs::file_time_type mtime;
    };
    std::vector<LogFile> logs;
    std::error_code ec;
    if (!log_dir.empty()) {
        for (fs::directory_iterator it(log_dir, ec), end; !ec && it != end; it.increment(ec)) {
            std::error_code ec2;
            // Regular files only: a symbolic link named x.log could point at a secret.
            if (it->path().extension() != ".log" || !it->is_regular_file(ec2) || it->is_symlink(ec2))
                continue;
            logs.push_back({it->path(), it->last_write_time(ec2)});
        }
    }
    // Newest first, so that the size limit drops old rotated files.
    std::sort(logs.begin(), logs.end(), [](const LogFile &a, const LogFile &b) { return a.mtime > b.mtime; });
    std::vector<std::pair<std::string, std::string>> entries;
    std::vector<std::string> skipped;
    std::size_t total = 0;
    for (const auto &log : logs) {
        std::string content;
        const std::size_t budget = max_bytes > total ? max_bytes - total : 0;
        if (!read_file(log.path, budget, content) || content.size() > budget) {
            skipped.push_back(log.path.filename().string());
            continue;
        }
        total += content.size();
        entries.emplace_back(log.path.filename().string(), std::move(content));
    }
    if (!skipped.empty()) {
        std::string note = "Left out (archive size limit reached or unreadable):\n";
        for (const auto &name : skipped)
            note += name + "\n";
        entries.emplace_back("LEFT_OUT.txt", std::move(note));
    }
    return make_zip(entries);
}

} // namespace pytun::detail
