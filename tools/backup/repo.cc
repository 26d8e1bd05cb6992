#include "repo.hh"

#include <rct/small_file.hh>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>
#include <xxhash.h>
#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>

namespace rct::backup {

using tools::exit_conflict;
using tools::exit_failure;
using tools::exit_not_found;
using tools::failure;
namespace fs = std::filesystem;

namespace {

[[noreturn]] void os_failure(const std::string& what)
{
    throw failure{exit_failure, what + ": " + std::strerror(errno), {}, {}};
}

}  // namespace

void fsync_path(const fs::path& p, int flags)
{
    rct::unique_fd fd(::open(p.c_str(), flags | O_CLOEXEC));
    if (!fd || ::fsync(fd.get()) != 0) {
        os_failure("cannot fsync " + p.string());
    }
}

std::string hex64(std::uint64_t v) { return fmt::format("{:016x}", v); }

json to_json(const manifest& m)
{
    json ranges = json::array();
    for (const auto& r : m.ranges) {
        ranges.push_back(r.xxh64 ? json::array({r.offset, r.length, hex64(*r.xxh64)})
                                 : json::array({r.offset, r.length, nullptr}));
    }
    json j{
        {"format", 1},
        {"id", m.id},
        {"disk", m.disk},
        {"disk_id", m.disk_id},
        {"mode", m.mode},
        {"parent", m.parent ? json(*m.parent) : json(nullptr)},
        {"full", m.full},
        {"file", m.file},
        {"created_at", m.created_at},
        {"size", m.size},
        {"token", m.token},
        {"checkpoint", m.checkpoint},
        {"data_bytes", m.data_bytes},
        {"zero_bytes", m.zero_bytes},
        {"file_size", m.file_size},
        {"file_xxh64", hex64(m.file_xxh64)},
        {"checksum", "xxh64"},
        {"checksum_chunk", checksum_chunk},
        {"ranges", ranges},
    };
    if (!m.group.empty()) {
        j["group"] = m.group;
    }
    return j;
}

manifest manifest_from_json(const json& j, const std::string& where)
{
    try {
        if (j.at("format").get<int>() != 1) {
            throw failure{exit_failure, where + ": unknown manifest format " + j.at("format").dump(), {}, {}};
        }
        manifest m;
        m.id = j.at("id").get<std::string>();
        m.disk = j.at("disk").get<std::string>();
        m.disk_id = j.at("disk_id").get<std::string>();
        m.mode = j.at("mode").get<std::string>();
        if (!j.at("parent").is_null()) {
            m.parent = j.at("parent").get<std::string>();
        }
        m.full = j.at("full").get<std::string>();
        m.file = j.at("file").get<std::string>();
        m.created_at = j.at("created_at").get<std::string>();
        m.size = j.at("size").get<std::uint64_t>();
        m.token = j.at("token").get<std::string>();
        m.checkpoint = j.at("checkpoint").get<std::string>();
        m.group = j.value("group", std::string());
        m.data_bytes = j.at("data_bytes").get<std::uint64_t>();
        m.zero_bytes = j.at("zero_bytes").get<std::uint64_t>();
        m.file_size = j.at("file_size").get<std::uint64_t>();
        m.file_xxh64 = std::stoull(j.at("file_xxh64").get<std::string>(), nullptr, 16);
        for (const auto& r : j.at("ranges")) {
            written_range w{r.at(0).get<std::uint64_t>(), r.at(1).get<std::uint64_t>(), {}};
            if (!r.at(2).is_null()) {
                w.xxh64 = std::stoull(r.at(2).get<std::string>(), nullptr, 16);
            }
            m.ranges.push_back(w);
        }
        return m;
    } catch (const json::exception& e) {
        throw failure{exit_failure, where + ": not a valid manifest: " + e.what(), {}, {}};
    } catch (const std::logic_error& e) {
        throw failure{exit_failure, where + ": not a valid manifest: " + e.what(), {}, {}};
    }
}

fs::path disk_dir(const fs::path& repo, const std::string& disk) { return repo / disk; }

namespace {

rct::unique_fd lock_file(const fs::path& path, int how, const std::string& busy)
{
    fs::create_directories(path.parent_path());
    rct::unique_fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    if (!fd) {
        os_failure("cannot open " + path.string());
    }
    if (::flock(fd.get(), how | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) {
            throw failure{exit_conflict, busy, {}, {}};
        }
        os_failure("cannot lock " + path.string());
    }
    return fd;
}

}  // namespace

rct::unique_fd lock_disk_dir(const fs::path& dir)
{
    rct::unique_fd fd = lock_file(dir / ".lock", LOCK_EX, "another rct-backup is working on " + dir.string());
    // Made here, by whoever writes the directory, so that a reader who may
    // not create files there still finds it to lock.
    rct::unique_fd readers(::open((dir / ".readers").c_str(), O_RDONLY | O_CREAT | O_CLOEXEC, 0644));
    if (!readers) {
        os_failure("cannot create " + (dir / ".readers").string());
    }
    return fd;
}

rct::unique_fd lock_readers(const fs::path& dir, bool exclusive)
{
    if (exclusive) {
        return lock_file(dir / ".readers", LOCK_EX,
                         "the backups in " + dir.string() + " are being read (restore, serve or verify); prune when they are done");
    }
    if (!fs::is_directory(dir)) {
        throw failure{exit_not_found, "no backups in " + dir.string(), {}, {}};
    }
    // Every writer makes the lock file (lock_disk_dir); a repository on
    // read-only media may lack it, and there no prune can run either.
    const fs::path path = dir / ".readers";
    rct::unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd && errno == ENOENT) {
        fd = rct::unique_fd(::open(path.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC, 0644));
        if (!fd && errno == EROFS) {
            return fd;
        }
    }
    if (!fd) {
        os_failure("cannot open " + path.string());
    }
    if (::flock(fd.get(), LOCK_SH | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) {
            throw failure{exit_conflict,
                          "a prune is changing the backups in " + dir.string() + "; try again when it is done", {}, {}};
        }
        os_failure("cannot lock " + path.string());
    }
    return fd;
}

std::vector<manifest> load_points(const fs::path& dir)
{
    if (fs::exists(dir / prune_journal)) {
        throw failure{exit_conflict,
                      "a prune of " + dir.string() +
                          " is under way or was interrupted: the next prune or backup of this disk finishes it "
                          "(if it cannot, its journal .prune says what it was merging: docs/format/backup.md)",
                      {}, {}};
    }
    return read_manifests(dir);
}

std::vector<manifest> read_manifests(const fs::path& dir)
{
    std::vector<manifest> out;
    if (!fs::is_directory(dir)) {
        return out;
    }
    for (const auto& entry : fs::directory_iterator(dir)) {
        const std::string name = entry.path().filename().string();
        if (name.starts_with(".") || entry.path().extension() != ".json") {
            continue;
        }
        // Read whole: nlohmann's stream reader is several times slower, and
        // a full's manifest has a range per 64 KiB of data.
        std::ifstream in(entry.path(), std::ios::binary);
        const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        const json j = json::parse(text, nullptr, false);
        if (j.is_discarded()) {
            throw failure{exit_failure, entry.path().string() + ": not JSON", {}, {}};
        }
        out.push_back(manifest_from_json(j, entry.path().string()));
    }
    std::sort(out.begin(), out.end(), [](const manifest& a, const manifest& b) { return a.id < b.id; });
    return out;
}

std::vector<std::string> discard_leftovers(const fs::path& dir)
{
    std::vector<std::string> snapshots;
    if (!fs::is_directory(dir)) {
        return snapshots;
    }
    bool removed = false;
    for (const auto& entry : fs::directory_iterator(dir)) {
        const std::string name = entry.path().filename().string();
        // ID.json.tmp: a manifest that never replaced anything (persist::replace_file).
        if (!name.starts_with(".tmp-") && !name.ends_with(".json.tmp")) {
            continue;
        }
        if (entry.path().extension() == ".pending") {
            std::ifstream in(entry.path());
            std::string snapshot;
            if (std::getline(in, snapshot) && !snapshot.empty()) {
                snapshots.push_back(snapshot);
            }
        }
        fs::remove(entry.path());
        removed = true;
    }
    if (removed) {
        fsync_path(dir, O_RDONLY | O_DIRECTORY);
    }
    return snapshots;
}

std::vector<manifest> chain_to(const std::vector<manifest>& points, const std::string& id)
{
    std::vector<manifest> chain;
    std::optional<std::string> at = id;
    while (at) {
        auto it = std::find_if(points.begin(), points.end(), [&](const manifest& m) { return m.id == *at; });
        if (it == points.end()) {
            return {};
        }
        chain.push_back(*it);
        at = it->parent;
    }
    std::reverse(chain.begin(), chain.end());
    return chain;
}

std::string new_id(const std::vector<manifest>& points)
{
    for (;;) {
        const auto now = std::chrono::system_clock::now();
        const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
        const std::time_t secs = static_cast<std::time_t>(ms / 1000);
        std::tm tm{};
        ::gmtime_r(&secs, &tm);
        char text[32];
        std::strftime(text, sizeof text, "%Y%m%d-%H%M%S", &tm);
        const std::string id = std::string(text) + "-" + fmt::format("{:03d}", static_cast<int>(ms % 1000));
        if (points.empty() || id > points.back().id) {
            return id;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
}

std::string image_name(const std::string& mode, const std::string& id) { return mode + "-" + id + ".qcow2"; }

fs::path temp_path(const fs::path& dir, const std::string& id, const std::string& ext)
{
    return dir / (".tmp-" + id + ext);
}

std::uint64_t file_xxh64(const fs::path& path)
{
    rct::unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
        os_failure("cannot open " + path.string());
    }
    XXH64_state_t* state = XXH64_createState();
    XXH64_reset(state, 0);
    std::vector<char> buf(4 << 20);
    for (;;) {
        const ssize_t n = ::read(fd.get(), buf.data(), buf.size());
        if (n < 0) {
            XXH64_freeState(state);
            os_failure("cannot read " + path.string());
        }
        if (n == 0) {
            break;
        }
        XXH64_update(state, buf.data(), static_cast<std::size_t>(n));
    }
    const std::uint64_t h = XXH64_digest(state);
    XXH64_freeState(state);
    return h;
}

void commit(const fs::path& dir, const fs::path& temp_image, manifest& m)
{
    fsync_path(temp_image, O_RDONLY);
    m.file_size = fs::file_size(temp_image);
    m.file_xxh64 = file_xxh64(temp_image);
    fs::rename(temp_image, dir / m.file);
    const std::string text = to_json(m).dump(1) + "\n";
    // The manifest last: a point exists once it does.
    rct::persist::replace_file(dir, m.id + ".json", std::vector<std::uint8_t>(text.begin(), text.end()));
}

}  // namespace rct::backup
