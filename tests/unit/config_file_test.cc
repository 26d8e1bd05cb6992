#define BOOST_TEST_MODULE config_file
// rctd.conf: every option has a key, the command line wins, and every
// kind of bad file is refused naming its line and key.
#include "command_line.hh"
#include "config_file.hh"

#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

namespace {

using rct::daemon::command_line;
using rct::daemon::config_error;

// A configuration file in the test's temporary directory.
struct conf_file {
    std::string path;
    explicit conf_file(const std::string& text)
    {
        char name[] = "/tmp/rct-conf.XXXXXX";
        const int fd = ::mkstemp(name);
        BOOST_REQUIRE(fd >= 0);
        ::close(fd);
        path = name;
        std::ofstream(path) << text;
    }
    ~conf_file() { ::unlink(path.c_str()); }
};

// rctd's options parsed from `args` (and the file they name).
struct parsed {
    command_line cl;
    CLI::App app{"rctd"};
    explicit parsed(std::vector<std::string> args)
    {
        rct::daemon::add_options(app, cl);
        args.insert(args.begin(), "rctd");
        std::vector<const char*> argv;
        for (const auto& a : args) {
            argv.push_back(a.c_str());
        }
        BOOST_REQUIRE(rct::daemon::parse_with_config(app, static_cast<int>(argv.size()), argv.data()));
    }
};

// The message parse_with_config refuses `text` with.
std::string refusal(const std::string& text)
{
    conf_file f(text);
    try {
        parsed p({"--config", f.path});
    } catch (const config_error& e) {
        const std::string what = e.what();
        BOOST_TEST(what.rfind(f.path + ":", 0) == 0, what);
        return what.substr(f.path.size());
    }
    BOOST_FAIL("accepted: " + text);
    return {};
}

// The options rctd.conf has no key for, as docs/configuration.md says:
// about this run, not the daemon (and the internal ones).
bool command_line_only(const CLI::Option& opt)
{
    return opt.get_group().empty() || opt.check_lname("version") || opt.check_lname("config") ||
           opt.check_lname("check-config") || opt.check_lname("help");
}

}  // namespace

BOOST_AUTO_TEST_CASE(every_option_has_a_key_and_every_key_an_option)
{
    command_line cl;
    CLI::App app{"rctd"};
    rct::daemon::add_options(app, cl);
    const auto& keys = rct::daemon::config_keys();
    for (const CLI::Option* opt : app.get_options()) {
        if (command_line_only(*opt)) {
            continue;
        }
        const std::string name = opt->get_name(false, true);
        const bool found = std::any_of(keys.begin(), keys.end(), [&](const auto& k) {
            return name.find(std::string(k.option)) != std::string::npos;
        });
        BOOST_TEST(found, "no rctd.conf key for " << name);
    }
    for (const auto& k : keys) {
        BOOST_TEST(app.get_option_no_throw(std::string(k.option)) != nullptr, "key " << k.key << " names no option");
    }
}

BOOST_AUTO_TEST_CASE(the_file_fills_in_and_the_command_line_wins)
{
    conf_file f("workers = 3\nstate_dir = \"/tmp/from-file\"\n[limits]\nmax_connections = 77\n"
                "[listen]\ntcp = [\"tcp:127.0.0.1:1\", \"tcp:127.0.0.1:2\"]\n[disks]\ntracking = false\n"
                "intent_region = \"16M\"\n[ublk]\nattach = [\"a\"]\n");
    parsed p({"--config", f.path, "--workers", "5", "--ublk", "b", "--ublk", "c"});
    BOOST_TEST(!rct::daemon::resolve(p.cl).has_value());
    const auto& cfg = p.cl.cfg;
    BOOST_TEST(cfg.workers == 5u);  // the command line's
    BOOST_TEST(cfg.state_dir == "/tmp/from-file");
    BOOST_TEST(cfg.max_connections == 77u);
    BOOST_TEST(cfg.listen == (std::vector<std::string>{"tcp:127.0.0.1:1", "tcp:127.0.0.1:2"}));
    BOOST_TEST(!cfg.tracking);
    BOOST_TEST(cfg.intent_region == std::uint64_t{16} << 20);
    BOOST_TEST(cfg.ublk == (std::vector<std::string>{"b", "c"}));  // a list given on the command line replaces the file's
    BOOST_TEST(cfg.nbd_socket == "/tmp/from-file/nbd.sock");
}

BOOST_AUTO_TEST_CASE(without_a_file_the_defaults_hold)
{
    parsed p({"--state-dir", "/tmp/x"});
    BOOST_TEST(!rct::daemon::resolve(p.cl).has_value());
    BOOST_TEST(p.cl.cfg.max_connections == 1024u);
    BOOST_TEST(p.cl.cfg.tracking);
}

BOOST_AUTO_TEST_CASE(bad_files_are_refused_naming_line_and_key)
{
    BOOST_TEST(refusal("workers = 2\n[limits]\nmax_conections = 5\n") == ":3: limits.max_conections: unknown key");
    BOOST_TEST(refusal("[limitz]\nx = 1\n") == ":1: limitz: unknown key");
    BOOST_TEST(refusal("\n\nworkers = \"two\"\n") == ":3: workers: expected an integer");
    BOOST_TEST(refusal("verbose = 1\n") == ":1: verbose: expected true or false");
    BOOST_TEST(refusal("[ublk]\nattach = \"a\"\n") == ":2: ublk.attach: expected an array of strings");
    BOOST_TEST(refusal("[ublk]\nattach = [\"a\",\n 3]\n") == ":3: ublk.attach: expected an array of strings");
    const std::string range = refusal("[limits]\nmax_connections = 0\n");
    BOOST_TEST(range.rfind(":2: limits.max_connections: ", 0) == 0, range);
    BOOST_TEST(range.find("not in range") != std::string::npos, range);
    BOOST_TEST(refusal("[disks]\nintent_region = \"3M\"\n") ==
               ":2: disks.intent_region: --intent-region: expected a power of two of at least 1M");
    BOOST_TEST(refusal("[disks]\nsnapshot_store_limit = \"lots\"\n") ==
               ":2: disks.snapshot_store_limit: --snapshot-store-limit: expected a size (e.g. 0, 512M, 20G)");
    const std::string syntax = refusal("workers = 2\nworkers =\n");
    BOOST_TEST(syntax.rfind(":2: ", 0) == 0, syntax);
}

BOOST_AUTO_TEST_CASE(the_ublk_watchdog_reads_no_file)
{
    conf_file f("workers = \"broken since rctd started\"\n");
    BOOST_CHECK_THROW(parsed({"--config", f.path}), config_error);
    parsed p({"--config", f.path, "--ublk-watchdog", "1", "--state-dir", "/tmp/x"});
    BOOST_TEST(p.cl.watchdog_parent == 1);
}

BOOST_AUTO_TEST_CASE(values_are_written_back_as_valid_toml)
{
    BOOST_TEST(rct::daemon::toml_string("a\"b\\c\nd\x01") == "\"a\\\"b\\\\c\\u000Ad\\u0001\"");
}

BOOST_AUTO_TEST_CASE(a_missing_named_file_is_an_error)
{
    BOOST_CHECK_THROW(parsed({"--config", "/nonexistent/rctd.conf"}), config_error);
}

BOOST_AUTO_TEST_CASE(the_example_file_is_valid_and_its_settings_read_back_the_same)
{
    parsed p({"--config", std::string(RCT_SOURCE_ROOT) + "/systemd/rctd.conf"});
    BOOST_REQUIRE(!rct::daemon::resolve(p.cl).has_value());
    const std::string effective = rct::daemon::effective_config(p.app, {});
    conf_file again(effective);
    parsed q({"--config", again.path});
    BOOST_TEST(rct::daemon::effective_config(q.app, {}) == effective);
}
