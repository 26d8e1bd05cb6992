#define BOOST_TEST_MODULE disk_registry
#include <rct/disk_registry.hh>
#include <rct/error.hh>
#include <rct/log.hh>

#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using rct::disk_registry;
using rct::errc;

namespace {

constexpr std::uint64_t MiB = 1 << 20;

// A fresh state directory per test case, deleted afterwards.
struct state_dir {
    state_dir()
    {
        char tmpl[] = "/tmp/rct-registry-test-XXXXXX";
        BOOST_REQUIRE(::mkdtemp(tmpl) != nullptr);
        root = tmpl;
        rct::log::set_level(rct::log::level::warning);
    }
    ~state_dir()
    {
        std::error_code ec;
        fs::remove_all(root, ec);
    }
    fs::path disks() const { return root / "disks"; }

    fs::path root;
};

std::function<bool(const rct::error&)> code_is(errc want)
{
    return [want](const rct::error& e) {
        BOOST_TEST_MESSAGE("rct::error: " << e.what());
        return e.code() == want;
    };
}

std::string read_file(const fs::path& p)
{
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file(const fs::path& p, const std::string& text)
{
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out << text;
}

void write_at(const fs::path& p, off_t offset, const std::string& data)
{
    const int fd = ::open(p.c_str(), O_WRONLY | O_CREAT, 0644);
    BOOST_REQUIRE(fd >= 0);
    BOOST_REQUIRE(::pwrite(fd, data.data(), data.size(), offset) == static_cast<ssize_t>(data.size()));
    ::close(fd);
}

std::uint64_t allocated_bytes(const fs::path& p)
{
    struct stat st {};
    BOOST_REQUIRE(::stat(p.c_str(), &st) == 0);
    return static_cast<std::uint64_t>(st.st_blocks) * 512;
}

std::vector<std::string> names(const disk_registry& reg)
{
    std::vector<std::string> out;
    for (const auto& d : reg.list()) {
        out.push_back(d->name());
    }
    return out;
}

std::vector<std::string> entries(const fs::path& dir)
{
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir)) {
        out.push_back(e.path().filename().string());
    }
    std::sort(out.begin(), out.end());
    return out;
}

}  // namespace

BOOST_FIXTURE_TEST_SUITE(registry, state_dir)

BOOST_AUTO_TEST_CASE(create_list_find)
{
    disk_registry reg(root);
    BOOST_TEST(fs::is_directory(disks()));
    BOOST_TEST(reg.list().empty());

    auto beta = reg.create("beta", 2 * MiB);
    auto alpha = reg.create("alpha", MiB);
    BOOST_TEST(alpha->name() == "alpha");
    BOOST_TEST(alpha->size() == MiB);
    BOOST_TEST(alpha->id().size() == 36u);
    BOOST_TEST(alpha->id()[14] == '4');  // UUID version 4
    BOOST_TEST(alpha->id() != beta->id());
    BOOST_TEST(alpha->created_at() > 0);
    BOOST_TEST(!alpha->removed());
    BOOST_TEST(alpha->clients() == 0u);

    BOOST_TEST(names(reg) == (std::vector<std::string>{"alpha", "beta"}), boost::test_tools::per_element());
    BOOST_TEST(reg.find("alpha") == alpha);
    BOOST_TEST(reg.find("gamma") == nullptr);

    BOOST_TEST(alpha->dir() == disks() / "alpha");
    BOOST_TEST(fs::file_size(disks() / "alpha" / "data.raw") == MiB);
    BOOST_TEST(allocated_bytes(disks() / "alpha" / "data.raw") == 0u);  // sparse
    BOOST_TEST(entries(disks() / "alpha") == (std::vector<std::string>{"data.raw", "disk.json", "snapshots", "tracking"}),
               boost::test_tools::per_element());
    // No staging directories left behind.
    BOOST_TEST(entries(disks()) == (std::vector<std::string>{"alpha", "beta"}), boost::test_tools::per_element());

    const std::string meta = read_file(disks() / "alpha" / "disk.json");
    BOOST_TEST(meta.find("\"format\": \"rct-disk\"") != std::string::npos);
    BOOST_TEST(meta.find("\"id\": \"" + alpha->id() + "\"") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(duplicate_name)
{
    disk_registry reg(root);
    reg.create("a", MiB);
    BOOST_CHECK_EXCEPTION(reg.create("a", 2 * MiB), rct::error, code_is(errc::exists));
    BOOST_TEST(reg.find("a")->size() == MiB);
}

BOOST_AUTO_TEST_CASE(names_are_validated)
{
    for (const char* good : {"a", "disk-1", "vm_01.root", "A", "0"}) {
        BOOST_TEST(disk_registry::valid_name(good), good);
    }
    BOOST_TEST(disk_registry::valid_name(std::string(64, 'x')));
    for (const char* bad : {"", ".hidden", "-opt", "a/b", "a b", "..", "a\nb", "é", "a:b", "a?b"}) {
        BOOST_TEST(!disk_registry::valid_name(bad), bad);
    }
    BOOST_TEST(!disk_registry::valid_name(std::string(65, 'x')));

    disk_registry reg(root);
    BOOST_CHECK_EXCEPTION(reg.create("../escape", MiB), rct::error, code_is(errc::invalid_argument));
    BOOST_CHECK_EXCEPTION(reg.create(".x", MiB), rct::error, code_is(errc::invalid_argument));
    BOOST_CHECK_EXCEPTION(reg.create(std::string(65, 'x'), MiB), rct::error, code_is(errc::invalid_argument));
    BOOST_TEST(entries(disks()).empty());
}

BOOST_AUTO_TEST_CASE(sizes_are_validated)
{
    disk_registry reg(root);
    for (std::uint64_t bad : {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{511}, std::uint64_t{1000},
                              MiB + 1, std::uint64_t{1} << 63}) {
        BOOST_CHECK_EXCEPTION(reg.create("d", bad), rct::error, code_is(errc::invalid_argument));
    }
    BOOST_TEST(reg.create("d", 512)->size() == 512u);
    BOOST_TEST(entries(disks()) == (std::vector<std::string>{"d"}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(resize_grow_and_shrink)
{
    disk_registry reg(root);
    auto d = reg.create("d", MiB);
    const fs::path data = disks() / "d" / "data.raw";

    reg.resize("d", 4 * MiB, false);
    BOOST_TEST(d->size() == 4 * MiB);
    BOOST_TEST(fs::file_size(data) == 4 * MiB);

    BOOST_CHECK_EXCEPTION(reg.resize("d", 2 * MiB, false), rct::error, code_is(errc::invalid_argument));
    BOOST_TEST(d->size() == 4 * MiB);
    BOOST_TEST(fs::file_size(data) == 4 * MiB);

    BOOST_CHECK_EXCEPTION(reg.resize("d", 4 * MiB + 100, false), rct::error, code_is(errc::invalid_argument));
    BOOST_CHECK_EXCEPTION(reg.resize("d", 0, true), rct::error, code_is(errc::invalid_argument));
    BOOST_CHECK_EXCEPTION(reg.resize("nope", 4 * MiB, false), rct::error, code_is(errc::not_found));

    reg.resize("d", 2 * MiB, true);
    BOOST_TEST(d->size() == 2 * MiB);
    BOOST_TEST(fs::file_size(data) == 2 * MiB);
    BOOST_TEST(read_file(disks() / "d" / "disk.json").find("resize_to") == std::string::npos);

    // One registry per state dir at a time, as rctd's lock ensures: the
    // first one's tracker would otherwise persist into the same files.
    reg.close_all();
    disk_registry again(root);
    BOOST_REQUIRE(again.find("d"));
    BOOST_TEST(again.find("d")->size() == 2 * MiB);
}

BOOST_AUTO_TEST_CASE(remove_disk)
{
    disk_registry reg(root);
    auto d = reg.create("d", MiB);
    reg.create("keep", MiB);
    reg.remove("d", false);
    BOOST_TEST(d->removed());
    BOOST_TEST(reg.find("d") == nullptr);
    BOOST_TEST(entries(disks()) == (std::vector<std::string>{"keep"}), boost::test_tools::per_element());
    BOOST_CHECK_EXCEPTION(reg.remove("d", false), rct::error, code_is(errc::not_found));

    // The name is free again, and a new disk under it is a new disk.
    auto again = reg.create("d", MiB);
    BOOST_TEST(again->id() != d->id());
}

BOOST_AUTO_TEST_CASE(remove_busy_disk)
{
    disk_registry reg(root);
    auto d = reg.create("d", MiB);
    int sv[2];
    BOOST_REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    d->attach_client(sv[0]);
    BOOST_TEST(d->clients() == 1u);

    BOOST_CHECK_EXCEPTION(reg.remove("d", false), rct::error, code_is(errc::busy));
    BOOST_TEST(reg.find("d") == d);
    BOOST_TEST(!d->removed());

    reg.remove("d", true);
    BOOST_TEST(d->removed());
    BOOST_TEST(reg.find("d") == nullptr);
    BOOST_TEST(entries(disks()).empty());
    // The client's socket was shut down: its peer sees end of file.
    char c;
    BOOST_TEST(::read(sv[1], &c, 1) == 0);

    d->detach_client(sv[0]);
    BOOST_TEST(d->clients() == 0u);
    ::close(sv[0]);
    ::close(sv[1]);
}

BOOST_AUTO_TEST_CASE(reload_keeps_identity)
{
    std::string id;
    std::int64_t created = 0;
    {
        disk_registry reg(root);
        auto d = reg.create("persist", 3 * MiB);
        id = d->id();
        created = d->created_at();
        reg.create("other", MiB);
    }
    disk_registry reg(root);
    BOOST_TEST(names(reg) == (std::vector<std::string>{"other", "persist"}), boost::test_tools::per_element());
    auto d = reg.find("persist");
    BOOST_REQUIRE(d);
    BOOST_TEST(d->id() == id);
    BOOST_TEST(d->created_at() == created);
    BOOST_TEST(d->size() == 3 * MiB);
}

BOOST_AUTO_TEST_CASE(bad_metadata_is_skipped)
{
    {
        disk_registry reg(root);
        for (const char* n : {"good", "garbage", "renamed", "short", "noid", "future", "nodata", "odd"}) {
            reg.create(n, MiB);
        }
    }
    write_file(disks() / "garbage" / "disk.json", "{ this is not json");
    fs::rename(disks() / "renamed", disks() / "moved");  // name in disk.json no longer matches
    fs::resize_file(disks() / "short" / "data.raw", MiB / 2);
    auto edit = [&](const char* n, const std::string& from, const std::string& to) {
        const fs::path p = disks() / n / "disk.json";
        std::string text = read_file(p);
        const auto at = text.find(from);
        BOOST_REQUIRE(at != std::string::npos);
        text.replace(at, from.size(), to);
        write_file(p, text);
    };
    edit("noid", "\"id\"", "\"not_id\"");
    edit("future", "\"version\": 1", "\"version\": 2");
    edit("odd", "\"size\": 1048576", "\"size\": 1048577");
    fs::remove(disks() / "nodata" / "data.raw");

    disk_registry reg(root);
    BOOST_TEST(names(reg) == (std::vector<std::string>{"good"}), boost::test_tools::per_element());
    // Skipped, not deleted: the files stay for a human to look at.
    BOOST_TEST(fs::exists(disks() / "garbage" / "data.raw"));
    BOOST_TEST(fs::exists(disks() / "moved" / "data.raw"));
    // A skipped disk's name cannot be taken over.
    BOOST_CHECK_EXCEPTION(reg.create("garbage", MiB), rct::error, code_is(errc::exists));
}

BOOST_AUTO_TEST_CASE(leftovers_are_cleaned_up)
{
    {
        disk_registry reg(root);
        reg.create("d", MiB);
    }
    fs::create_directories(disks() / ".deleted-old-1234" );
    write_file(disks() / ".deleted-old-1234" / "data.raw", "x");
    fs::create_directories(disks() / ".create-x-5678.tmp");
    write_file(disks() / ".create-x-5678.tmp" / "data.raw", "x");
    fs::create_directories(disks() / ".move-y-9999.tmp");
    write_file(disks() / ".move-y-9999.tmp" / "data.raw", "the user's file");
    write_file(disks() / "d" / "disk.json.tmp", "half written");
    write_file(disks() / "stray-file", "");

    disk_registry reg(root);
    BOOST_TEST(names(reg) == (std::vector<std::string>{"d"}), boost::test_tools::per_element());
    BOOST_TEST(entries(disks()) == (std::vector<std::string>{".move-y-9999.tmp", "d", "stray-file"}),
               boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(interrupted_resize_is_settled)
{
    {
        disk_registry reg(root);
        reg.create("grown", MiB);
        reg.create("rolled", MiB);
    }
    // As if rctd died between recording the resize and committing it.
    for (const char* n : {"grown", "rolled"}) {
        const fs::path p = disks() / n / "disk.json";
        std::string text = read_file(p);
        const auto end = text.rfind('}');
        text.insert(end, ",\n    \"resize_to\": 2097152\n");
        write_file(p, text);
    }
    fs::resize_file(disks() / "grown" / "data.raw", 2 * MiB);

    disk_registry reg(root);
    BOOST_REQUIRE(reg.find("grown"));
    BOOST_REQUIRE(reg.find("rolled"));
    BOOST_TEST(reg.find("grown")->size() == 2 * MiB);
    BOOST_TEST(reg.find("rolled")->size() == MiB);
    BOOST_TEST(read_file(disks() / "grown" / "disk.json").find("resize_to") == std::string::npos);
    BOOST_TEST(read_file(disks() / "rolled" / "disk.json").find("resize_to") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(import_copy_keeps_content_and_holes)
{
    const fs::path src = root / "image.raw";
    const std::uint64_t size = 64 * MiB;
    write_at(src, 0, std::string(4096, 'a'));
    write_at(src, static_cast<off_t>(MiB), std::string(64 * 1024, 'b'));
    write_at(src, static_cast<off_t>(size - 4096), std::string(4096, 'c'));
    fs::resize_file(src, size);
    const std::string before = read_file(src);
    BOOST_REQUIRE(allocated_bytes(src) < 4 * MiB);

    disk_registry reg(root);
    auto d = reg.import("img", src, false);
    BOOST_TEST(d->size() == size);
    const fs::path data = disks() / "img" / "data.raw";
    BOOST_TEST(fs::exists(src));
    BOOST_TEST((read_file(data) == before));
    BOOST_TEST(allocated_bytes(data) < 4 * MiB);

    // One registry per state dir at a time, as rctd's lock ensures: the
    // first one's tracker would otherwise persist into the same files.
    reg.close_all();
    disk_registry again(root);
    BOOST_REQUIRE(again.find("img"));
    BOOST_TEST(again.find("img")->id() == d->id());
}

BOOST_AUTO_TEST_CASE(import_move)
{
    const fs::path src = root / "image.raw";
    write_at(src, 0, std::string(8192, 'm'));
    disk_registry reg(root);

    reg.create("taken", MiB);
    BOOST_CHECK_EXCEPTION(reg.import("taken", src, true), rct::error, code_is(errc::exists));
    BOOST_TEST(fs::exists(src));  // a refused move leaves the file alone

    auto d = reg.import("moved", src, true);
    BOOST_TEST(d->size() == 8192u);
    BOOST_TEST(!fs::exists(src));
    BOOST_TEST(read_file(disks() / "moved" / "data.raw") == std::string(8192, 'm'));
}

BOOST_AUTO_TEST_CASE(import_errors)
{
    disk_registry reg(root);
    BOOST_CHECK_EXCEPTION(reg.import("x", root / "missing.raw", false), rct::error, code_is(errc::not_found));
    BOOST_CHECK_EXCEPTION(reg.import("x", root / "missing.raw", true), rct::error, code_is(errc::not_found));

    write_file(root / "odd.raw", std::string(1000, 'o'));
    BOOST_CHECK_EXCEPTION(reg.import("x", root / "odd.raw", false), rct::error, code_is(errc::invalid_argument));
    write_file(root / "empty.raw", "");
    BOOST_CHECK_EXCEPTION(reg.import("x", root / "empty.raw", false), rct::error, code_is(errc::invalid_argument));
    BOOST_CHECK_EXCEPTION(reg.import("x", root, false), rct::error, code_is(errc::invalid_argument));
    write_file(root / "ok.raw", std::string(512, 'k'));
    BOOST_CHECK_EXCEPTION(reg.import("bad/name", root / "ok.raw", false), rct::error,
                          code_is(errc::invalid_argument));

    // A disk's own data file is not up for grabs.
    reg.create("victim", MiB);
    BOOST_CHECK_EXCEPTION(reg.import("thief", disks() / "victim" / "data.raw", true), rct::error,
                          code_is(errc::invalid_argument));

    BOOST_TEST(entries(disks()) == (std::vector<std::string>{"victim"}), boost::test_tools::per_element());
    BOOST_TEST(fs::exists(root / "odd.raw"));
}

// An import never reaches a file by a symbolic link, and a move takes only
// a file that is wholly the caller's; what is moved in becomes rctd's (0600).
BOOST_AUTO_TEST_CASE(import_without_borrowed_authority)
{
    disk_registry reg(root);
    write_file(root / "real.raw", std::string(4096, 'r'));
    fs::create_symlink(root / "real.raw", root / "link.raw");
    fs::create_directory(root / "dir");
    write_file(root / "dir" / "in.raw", std::string(4096, 'd'));
    fs::create_directory_symlink(root / "dir", root / "dirlink");
    for (const bool move : {false, true}) {
        BOOST_CHECK_EXCEPTION(reg.import("x", root / "link.raw", move), rct::error, code_is(errc::invalid_argument));
        BOOST_CHECK_EXCEPTION(reg.import("x", root / "dirlink" / "in.raw", move), rct::error,
                              code_is(errc::invalid_argument));
    }

    fs::create_hard_link(root / "real.raw", root / "second.raw");
    BOOST_CHECK_EXCEPTION(reg.import("x", root / "real.raw", true), rct::error, code_is(errc::invalid_argument));
    fs::remove(root / "second.raw");

    rct::import_source theirs = rct::import_source::open_path(root / "real.raw", true);
    theirs.owner = ::geteuid() + 1;
    BOOST_CHECK_EXCEPTION(reg.import("x", std::move(theirs), true), rct::error, code_is(errc::invalid_argument));
    BOOST_TEST(entries(disks()).empty());
    BOOST_TEST(read_file(root / "real.raw") == std::string(4096, 'r'));

    ::chmod((root / "real.raw").c_str(), 0644);
    rct::import_source mine = rct::import_source::open_path(root / "real.raw", true);
    mine.owner = ::geteuid();
    reg.import("mine", std::move(mine), true);
    struct stat st {};
    BOOST_REQUIRE(::stat((disks() / "mine" / "data.raw").c_str(), &st) == 0);
    BOOST_TEST((st.st_mode & 07777) == 0600u);
    BOOST_TEST(!fs::exists(root / "real.raw"));
}

BOOST_AUTO_TEST_SUITE_END()
