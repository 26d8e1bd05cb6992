// listener: accepts NBD clients and hands each to the least busy worker.
//
// One thread blocks in poll(2) on the listening sockets (a Unix socket, TCP
// endpoints, or sockets inherited through systemd socket activation) and an
// eventfd used to stop it. Accepting is rare next to I/O, so it stays off the
// workers' rings; the accepted socket moves to a worker through its mailbox.
#pragma once

#include "access.hh"
#include "worker.hh"

#include <rct/unique_fd.hh>

#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace rct::daemon {

class listener {
public:
    explicit listener(std::vector<std::unique_ptr<worker>>& workers);
    ~listener();
    listener(const listener&) = delete;
    listener& operator=(const listener&) = delete;

    // Setup; each throws rct::error with the address in its message.
    // Its owner, group and mode come from the access policy.
    void listen_unix(const std::filesystem::path& path, const access_policy& access);
    // "HOST", "HOST:PORT", "[V6]:PORT"; the port defaults to 10809.
    void listen_tcp(const std::string& spec);
    void adopt_listening(unique_fd fd);

    void start();
    void stop();

private:
    void loop() noexcept;
    worker& pick_worker() noexcept;

    std::vector<std::unique_ptr<worker>>& workers_;
    std::vector<unique_fd> sockets_;
    std::vector<std::filesystem::path> unix_paths_;
    unique_fd stop_fd_;
    std::thread thread_;
    unsigned next_ = 0;
    std::uint64_t accepted_ = 0;
};

}  // namespace rct::daemon
