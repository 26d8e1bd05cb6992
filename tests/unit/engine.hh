// engine: a fresh state dir served through the whole engine — registry,
// disks, tracking, snapshots — as rctd runs it, for the unit tests that
// drive disks through writes, restarts and crashes. I/O runs to completion
// on the calling thread (sync_io); one thread drives an engine at a time.
#pragma once

#include "test_util.hh"

#include <rct/disk_registry.hh>
#include <rct/sync_io.hh>

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace rct::test {

struct engine {
    temp_dir dir;
    disk_options opts;
    std::unique_ptr<disk_registry> reg;
    sync_io io;

    // tune adjusts the options before the registry first opens.
    explicit engine(const std::string& name, const std::function<void(disk_options&)>& tune = {},
                    log::level quiet = log::level::err)
        : dir{name, quiet}
    {
        if (tune) {
            tune(opts);
        }
        reg = std::make_unique<disk_registry>(dir.path, opts);
    }
    // kill -9: nothing is closed cleanly.
    void crash_and_restart()
    {
        reg.reset();
        reg = std::make_unique<disk_registry>(dir.path, opts);
    }
    void restart()
    {
        reg->close_all();
        crash_and_restart();
    }
    disk& d(const std::string& name = "d") { return *reg->find(name); }
    std::filesystem::path file(const std::string& rel, const std::string& name = "d") const
    {
        return dir.path / "disks" / name / rel;
    }
    void write(std::uint64_t off, const std::vector<std::byte>& data, const std::string& name = "d")
    {
        auto copy = data;
        BOOST_REQUIRE_EQUAL(io.run(d(name).store(), io_op::write, off, copy.size(), copy.data()), 0);
    }
    std::vector<std::byte> read(backend& b, std::uint64_t off, std::uint64_t len)
    {
        std::vector<std::byte> out(len);
        BOOST_REQUIRE_EQUAL(io.run(b, io_op::read, off, len, out.data()), 0);
        return out;
    }
    std::vector<std::byte> read_snap(const std::string& s, std::uint64_t off, std::uint64_t len)
    {
        auto v = d().snapshots()->view(s);
        return read(*v, off, len);
    }
    static bool exists_with_prefix(const std::filesystem::path& dir, const std::string& prefix)
    {
        for (const auto& e : std::filesystem::directory_iterator(dir)) {
            if (e.path().filename().string().rfind(prefix, 0) == 0) {
                return true;
            }
        }
        return false;
    }
};

}  // namespace rct::test
