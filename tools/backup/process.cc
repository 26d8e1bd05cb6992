#include "process.hh"

#include "control_client.hh"

#include <fcntl.h>
#include <netdb.h>
#include <signal.h>
#include <sys/prctl.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

extern char** environ;

namespace rct::backup {

using tools::exit_failure;
using tools::exit_usage;
using tools::failure;

namespace {

std::string joined(const std::vector<std::string>& argv)
{
    std::string s;
    for (const auto& a : argv) {
        s += (s.empty() ? "" : " ") + a;
    }
    return s;
}

pid_t spawn_bound(const std::vector<std::string>& argv, int err_fd)
{
    std::vector<char*> args;
    for (const auto& a : argv) {
        args.push_back(const_cast<char*>(a.c_str()));
    }
    args.push_back(nullptr);
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) {
        throw failure{exit_failure, "cannot run " + argv[0] + ": " + std::strerror(errno), {}, {}};
    }
    if (pid == 0) {
        // Only async-signal-safe calls from here to exec.
        ::prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (::getppid() != parent) {
            ::_exit(127);
        }
        const int null_fd = ::open("/dev/null", O_RDONLY);
        ::dup2(null_fd, 0);
        ::dup2(err_fd, 2);
        ::execvp(args[0], args.data());
        ::_exit(127);
    }
    return pid;
}

// Starts argv with stdout and stderr sent to the given fds (-1: inherited).
// With `die_with_parent` the child gets SIGTERM when rct-backup dies (even
// by SIGKILL), so that a killed run leaves no qemu-nbd behind.
pid_t spawn(const std::vector<std::string>& argv, int out_fd, int err_fd, bool die_with_parent = false)
{
    if (die_with_parent) {
        return spawn_bound(argv, err_fd);
    }
    std::vector<char*> args;
    for (const auto& a : argv) {
        args.push_back(const_cast<char*>(a.c_str()));
    }
    args.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    if (out_fd >= 0) {
        posix_spawn_file_actions_adddup2(&actions, out_fd, 1);
    }
    if (err_fd >= 0) {
        posix_spawn_file_actions_adddup2(&actions, err_fd, 2);
    }
    pid_t pid = -1;
    const int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
        throw failure{exit_failure, "cannot run " + argv[0] + ": " + std::strerror(rc), {}, {}};
    }
    return pid;
}

int wait_for(pid_t pid)
{
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return status;
}

std::string describe(int status)
{
    if (WIFEXITED(status)) {
        return "exited " + std::to_string(WEXITSTATUS(status));
    }
    return "was killed by signal " + std::to_string(WTERMSIG(status));
}

bool accepts(const std::string& path)
{
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return false;
    }
    const bool ok = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0;
    ::close(fd);
    return ok;
}

// True when HOST:PORT accepts a TCP connection.
bool accepts_tcp(const std::string& host, const std::string& port)
{
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    if (::getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0) {
        return false;
    }
    bool ok = false;
    for (const addrinfo* a = res; a != nullptr && !ok; a = a->ai_next) {
        const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd >= 0) {
            ok = ::connect(fd, a->ai_addr, a->ai_addrlen) == 0;
            ::close(fd);
        }
    }
    ::freeaddrinfo(res);
    return ok;
}

}  // namespace


temp_file::temp_file()
{
    char name[] = "/tmp/rct-backup-out.XXXXXX";
    fd = ::mkstemp(name);
    if (fd < 0) {
        throw failure{exit_failure, std::string("cannot create a temporary file: ") + std::strerror(errno), {}, {}};
    }
    ::unlink(name);
}

temp_file::~temp_file() { ::close(fd); }

std::string temp_file::contents() const
{
    std::string s;
    char buf[4096];
    ssize_t n;
    off_t at = 0;
    while ((n = ::pread(fd, buf, sizeof buf, at)) > 0) {
        s.append(buf, static_cast<std::size_t>(n));
        at += n;
    }
    while (!s.empty() && s.back() == '\n') {
        s.pop_back();
    }
    return s;
}

std::string run(const std::vector<std::string>& argv)
{
    temp_file out, err;
    const int status = wait_for(spawn(argv, out.fd, err.fd));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        const std::string text = err.contents();
        throw failure{exit_failure, joined(argv) + " " + describe(status) + (text.empty() ? "" : ": " + text), {}, {}};
    }
    return out.contents();
}

served_image::served_image(const std::string& image, bool writable, const std::string& listen)
{
    char dir[] = "/tmp/rct-backup.XXXXXX";
    if (::mkdtemp(dir) == nullptr) {
        throw failure{exit_failure, std::string("cannot create a private directory: ") + std::strerror(errno), {}, {}};
    }
    dir_ = dir;
    // --persistent: the readiness probe below is a client too; finish() ends it.
    // A writable image is a backup being written: rct-backup syncs it itself
    // before it becomes a point (and a killed run's file is discarded), so
    // qemu's own flushes would only order metadata nobody relies on; each
    // qcow2 cluster allocation in a new overlay would wait for one.
    std::vector<std::string> argv{"qemu-nbd", "-f", "qcow2", "--persistent",
                                  writable ? "--cache=unsafe" : "--cache=writeback"};
    if (listen.rfind("tcp:", 0) == 0) {
        const auto colon = listen.rfind(':');
        host_ = listen.substr(4, colon - 4);
        port_ = listen.substr(colon + 1);
        if (colon < 4 || host_.empty() || port_.empty()) {
            throw failure{exit_usage, "--listen wants tcp:HOST:PORT, not " + listen, {}, {}};
        }
        argv.insert(argv.end(), {"-b", host_, "-p", port_});
    } else {
        socket_ = listen.empty() ? dir_ + "/nbd.sock" : listen;
        argv.insert(argv.end(), {"-k", socket_});
    }
    if (writable) {
        // Zeroes become qcow2 zero clusters (or holes in a full), not data.
        argv.insert(argv.end(), {"--discard=unmap", "--detect-zeroes=unmap"});
    } else {
        // Readers may open several connections (nbdfuse, parallel restore).
        argv.insert(argv.end(), {"--read-only", "--shared=0"});
    }
    argv.push_back(image);
    // Its messages (the readiness probe's "Broken pipe" among them) are kept
    // for a failure report instead of reaching the user's terminal.
    log_ = std::make_unique<temp_file>();
    pid_ = spawn(argv, -1, log_->fd, true);

    // Ready once the socket accepts a connection.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    for (;;) {
        int status = 0;
        if (::waitpid(pid_, &status, WNOHANG) == pid_) {
            pid_ = -1;
            throw failure{exit_failure, "qemu-nbd serving " + image + " " + describe(status) + ": " + log_->contents(),
                          {}, {}};
        }
        if (socket_.empty() ? accepts_tcp(host_, port_) : accepts(socket_)) {
            return;
        }
        if (std::chrono::steady_clock::now() > deadline) {
            throw failure{exit_failure, "qemu-nbd did not start serving " + image + " within 30 s", {}, {}};
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
}

std::string served_image::uri() const
{
    if (socket_.empty()) {
        const bool v6 = host_.find(':') != std::string::npos;
        return "nbd://" + (v6 ? "[" + host_ + "]" : host_) + ":" + port_;
    }
    return "nbd+unix:///?socket=" + socket_;
}

bool served_image::running()
{
    int status = 0;
    if (pid_ > 0 && ::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
    }
    return pid_ > 0;
}

void served_image::finish()
{
    // qemu-nbd closes the image cleanly on SIGTERM (qemu's caches written).
    ::kill(pid_, SIGTERM);
    const int status = wait_for(pid_);
    pid_ = -1;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        throw failure{exit_failure, "qemu-nbd " + describe(status) + " while closing the image: " + log_->contents(),
                      {}, {}};
    }
}

served_image::~served_image()
{
    if (pid_ > 0) {
        ::kill(pid_, SIGTERM);
        wait_for(pid_);
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
}

}  // namespace rct::backup
