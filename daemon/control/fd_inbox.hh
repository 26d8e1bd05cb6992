// fd_inbox: the control API's side door for file descriptors. HTTP cannot
// carry an open file, so a caller that imports a file it opened itself
// (rctctl import) first hands the fd over SCM_RIGHTS on this Unix socket
// (CONTROL_SOCKET.fd), gets back a one-time ticket, and names the ticket in
// POST /v1/disks as "import_fd". rctd thus reads only what the caller could
// read: it never opens the caller's path with its own authority.
//
// Protocol (docs/control-api.md): connect, send one byte with one fd in an
// SCM_RIGHTS message, read one line: "OK TICKET\n" or "ERR MESSAGE\n". A
// ticket is bound to the sender's uid (SO_PEERCRED), redeemable once, by
// that uid only, for 60 s. At most 8 tickets per uid and 64 in all are
// held; a sender that does not send within 2 s is dropped.
//
// One thread ("rct-fdinbox") accepts and serves one sender at a time; take()
// runs on the API's threads. The ticket table is under a mutex.
#pragma once

#include "../access.hh"

#include <rct/thread_annotations.hh>
#include <rct/unique_fd.hh>

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <string>
#include <thread>

namespace rct::daemon {

class fd_inbox {
public:
    // Binds path (replacing a stale socket) with the control socket's
    // owner and mode, and starts the thread. Throws rct::error.
    fd_inbox(std::filesystem::path path, const access_policy& access, unique_fd inherited = {});
    ~fd_inbox();
    fd_inbox(const fd_inbox&) = delete;
    fd_inbox& operator=(const fd_inbox&) = delete;

    // The file passed with ticket by uid; throws rct::error (invalid_argument)
    // for an unknown, expired or someone else's ticket.
    unique_fd take(const std::string& ticket, uid_t uid);
    // Live upgrade: stops the thread; the listening socket stays open and
    // bound for the next rctd (files passed but not yet taken are lost).
    int release();
    int listening_socket() const noexcept { return listen_.get(); }

private:
    struct held {
        unique_fd fd;
        uid_t uid;
        std::chrono::steady_clock::time_point expires;
    };

    void run();
    void serve(int conn);
    // A ticket for fd sent by uid, or an error message.
    std::string admit(unique_fd fd, uid_t uid, std::string& ticket);
    void drop_expired() REQUIRES(mutex_);

    const std::filesystem::path path_;
    // Only a socket bound here is unlinked at the end; a passed one keeps
    // its name (systemd may pass it again).
    const bool bound_here_;
    const access_policy& access_;
    unique_fd listen_;
    unique_fd stop_;  // eventfd
    rct::mutex mutex_;
    std::map<std::string, held> tickets_ GUARDED_BY(mutex_);
    std::thread thread_;
};

}  // namespace rct::daemon
