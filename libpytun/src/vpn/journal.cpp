// SPDX-License-Identifier: MIT
// Capture journals: one small JSON file per capture and network namespace.
#include "vpn/journal.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

namespace pytun::detail {
namespace {

namespace fs = std::filesystem;

std::string read_first_line(const std::string &path)
{
    std::ifstream in(path);
    std::string line;
    std::getline(in, line);
    return line;
}

// Field 22 of /proc/PID/stat; 0 when the process does not exist.
std::uint64_t start_time_of(int pid)
{
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto close = stat.rfind(')'); // the command name may hold spaces and ')'
    if (close == std::string::npos)
        return 0;
    std::istringstream fields(stat.substr(close + 2));
    std::string field;
    for (int i = 3; i <= 22 && fields >> field; ++i)
        if (i == 22)
            return std::strtoull(field.c_str(), nullptr, 10);
    return 0;
}

std::string file_name(std::uint64_t netns, const std::string &id)
{
    return "capture-" + std::to_string(netns) + "-" + id + ".json";
}

const char *method_name(CaptureMethod method)
{
    return method == CaptureMethod::nat ? "nat" : "nft";
}

} // namespace

ProcessIdentity ProcessIdentity::self()
{
    ProcessIdentity p;
    p.pid = static_cast<int>(::getpid());
    p.start_time = start_time_of(p.pid);
    p.boot_id = read_first_line("/proc/sys/kernel/random/boot_id");
    struct stat st {};
    if (::stat("/proc/thread-self/ns/net", &st) == 0)
        p.netns = st.st_ino;
    return p;
}

bool ProcessIdentity::alive() const
{
    if (pid <= 0 || boot_id != read_first_line("/proc/sys/kernel/random/boot_id"))
        return false;
    return start_time_of(pid) == start_time;
}

std::string journal_dir()
{
    std::string base = "/run/pytun";
    if (const char *runtime = std::getenv("RUNTIME_DIRECTORY"); runtime && *runtime) {
        base = runtime;
        base = base.substr(0, base.find(':')); // systemd lists several with ':'
    }
    return base + "/vpn";
}

bool write_journal(const CaptureJournal &journal, std::string &error)
{
    const fs::path dir = journal_dir();
    std::error_code ec;
    fs::create_directories(dir, ec);
    const nlohmann::json j = {
        {"id", journal.id},
        {"tunnel", journal.tunnel},
        {"method", method_name(journal.method)},
        {"pid", journal.owner.pid},
        {"start_time", journal.owner.start_time},
        {"boot_id", journal.owner.boot_id},
        {"netns", journal.owner.netns},
    };
    const fs::path path = dir / file_name(journal.owner.netns, journal.id);
    const fs::path temporary = path.string() + ".tmp";
    {
        std::ofstream out(temporary, std::ios::trunc);
        out << j.dump() << "\n";
        if (!out.flush()) {
            error = "cannot write the capture journal " + temporary.string() + ": " +
                    (ec ? ec.message() : std::string("write failed")) +
                    " (pytun vpn keeps it under $RUNTIME_DIRECTORY or /run/pytun; it must be writable)";
            return false;
        }
    }
    fs::rename(temporary, path, ec); // whole or not at all
    if (ec) {
        error = "cannot write the capture journal " + path.string() + ": " + ec.message();
        return false;
    }
    return true;
}

void remove_journal(const CaptureJournal &journal)
{
    std::error_code ec;
    fs::remove(fs::path(journal_dir()) / file_name(journal.owner.netns, journal.id), ec);
}

std::vector<CaptureJournal> read_journals(std::uint64_t netns)
{
    std::vector<CaptureJournal> out;
    std::error_code ec;
    const std::string prefix = "capture-" + std::to_string(netns) + "-";
    for (const auto &entry : fs::directory_iterator(journal_dir(), ec)) {
        const std::string name = entry.path().filename().string();
        if (name.rfind(prefix, 0) != 0 || entry.path().extension() != ".json")
            continue;
        std::ifstream in(entry.path());
        const auto j = nlohmann::json::parse(in, nullptr, false);
        if (j.is_discarded() || !j.is_object())
            continue;
        CaptureJournal c;
        c.id = j.value("id", "");
        c.tunnel = j.value("tunnel", "");
        c.method = j.value("method", "") == "nat" ? CaptureMethod::nat : CaptureMethod::nft;
        c.owner.pid = j.value("pid", 0);
        c.owner.start_time = j.value("start_time", std::uint64_t{0});
        c.owner.boot_id = j.value("boot_id", "");
        c.owner.netns = j.value("netns", std::uint64_t{0});
        if (!c.id.empty() && c.owner.netns == netns && name == file_name(netns, c.id))
            out.push_back(std::move(c));
    }
    return out;
}

} // namespace pytun::detail
