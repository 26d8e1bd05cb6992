// listener: accepts NBD clients and hands each to the least busy worker.
//
// One thread blocks in poll(2) on the listening sockets (a Unix socket, TCP
// endpoints, or sockets inherited through systemd socket activation) and an
// eventfd used to stop it. Accepting is rare next to I/O, so it stays off the
// workers' rings; the accepted socket moves to a worker through its mailbox.
//
// Each accepted socket must first get a slot from admission (limits per peer
// and in all); one that does not is closed at once. A spare descriptor is
// held so that accept at EMFILE can still take the pending connection off
// the queue and close it instead of polling a readable socket in a loop.
#pragma once

#include "access.hh"
#include "admission.hh"
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
    listener(std::vector<std::unique_ptr<worker>>& workers, admission& slots);
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
    // Live upgrade: stops accepting and gives up the listening sockets,
    // still bound and listening (clients queue in the backlog meanwhile);
    // their paths are then left in place.
    std::vector<unique_fd> release();

private:
    void loop() noexcept;
    void accept_one(int listening) noexcept;
    void shed_one(int listening, int err) noexcept;
    worker& pick_worker() noexcept;

    std::vector<std::unique_ptr<worker>>& workers_;
    admission& slots_;
    unique_fd spare_;  // given up for a moment when accept hits the fd limit
    std::vector<unique_fd> sockets_;
    std::vector<std::filesystem::path> unix_paths_;
    unique_fd stop_fd_;
    std::thread thread_;
    unsigned next_ = 0;
    std::uint64_t accepted_ = 0;
};

}  // namespace rct::daemon
