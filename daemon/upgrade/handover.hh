// handover: what one rctd gives the next in a live upgrade, and the channel
// it goes over (docs/upgrade.md has the byte layout and the protocol).
//
// The channel is a SOCK_SEQPACKET socketpair: the old daemon keeps one end
// and starts the new binary with the other as --takeover-fd. Messages are a
// fixed 24-byte header and a small payload; descriptors ride along with
// SCM_RIGHTS, at most fds_per_message at a time. The state itself (every
// NBD connection's session_state, which descriptor is which) is one blob
// in a sealed memfd: its size is the kernel's to keep, not the sender's to
// claim, it cannot change after it was sent, and it has a checksum. Every
// count and length in it is checked against what is left before anything
// is allocated, every descriptor index against the descriptors received,
// so a wrong or hostile peer gets an error, never a misread.
//
// Threading: plain blocking calls, made by the main thread only (the old
// daemon's upgrade driver, the new daemon's takeover) with every worker
// frozen or not yet serving.
#pragma once

#include "../nbd/session_state.hh"

#include <rct/tracker.hh>
#include <rct/unique_fd.hh>

#include <chrono>
#include <map>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace rct::daemon::upgrade {

// Bumped for any change to the messages or the blob a previous rctd could
// not read; an rctd speaks only its own.
inline constexpr std::uint16_t protocol_version = 2;
inline constexpr std::size_t fds_per_message = 250;  // the kernel takes 253

enum class msg : std::uint16_t {
    hello = 1,    // new → old: pid, version
    state = 2,    // old → new: the memfd, then the count of fds to follow
    fds = 3,      // old → new: the next descriptors
    ready = 4,    // new → old: everything taken over and checked
    commit = 5,   // old → new: serve; the old daemon exits
    serving = 6,  // new → old: serving since (the pause)
    fail = 7,     // new → old: why it gives up
};

struct message {
    msg type{};
    std::uint16_t version = 0;
    std::vector<std::uint8_t> payload;
    std::vector<unique_fd> fds;
};

// One listening socket and what it is.
enum class socket_kind : std::uint8_t { nbd = 1, control = 2, fd_inbox = 3 };
struct listening_socket {
    socket_kind kind{};
    std::uint32_t fd = 0;  // index into the descriptors
    std::string address;   // for logs: a path or host:port
};

struct frozen_nbd {
    std::uint32_t fd = 0;  // index
    nbd::session_state state;
};

struct state {
    std::uint32_t old_pid = 0;
    std::string old_version;
    std::int64_t frozen_at_ns = 0;  // CLOCK_MONOTONIC: when I/O stopped
    std::uint32_t lock_fd = 0;      // the state dir's flock
    std::vector<listening_socket> sockets;
    std::vector<frozen_nbd> connections;
    // The control API connection that asked for the upgrade, to be answered
    // by whoever serves at the end (no_fd: asked for by a signal).
    std::uint32_t requester_fd = no_fd;
    std::string rollback_reason;  // set when the old daemon takes back its own state
    // Each tracked disk's live change map, by disk id: the next rctd goes on
    // from it instead of a clean seal and a reopen (tracker_handoff).
    std::map<std::string, tracker_handoff> disks;
    static constexpr std::uint32_t no_fd = 0xffffffffu;
};

// The blob, as stored in the memfd. decode throws rct::error (corrupt)
// for damage, unknown versions or indices past fd_count.
std::vector<std::uint8_t> encode(const state& s);
state decode(std::span<const std::uint8_t> blob, std::size_t fd_count);
// The blob header's checksum of the body (XXH3-64).
std::uint64_t body_checksum(std::span<const std::uint8_t> body) noexcept;

// Blocking I/O on the channel; throws rct::error. receive waits until the
// deadline (nullopt at end of file: the peer is gone).
void send(int sock, msg type, const std::vector<std::uint8_t>& payload, std::span<const int> fds = {});
std::optional<message> receive(int sock, std::chrono::steady_clock::time_point deadline);

// The whole state with its descriptors: a memfd, then batches of fds.
void send_state(int sock, const state& s, std::span<const int> fds);
// Reads what send_state sent; throws on anything else.
std::pair<state, std::vector<unique_fd>> receive_state(int sock, std::chrono::steady_clock::time_point deadline);

// HELLO / READY / SERVING payloads.
struct hello {
    std::uint32_t pid = 0;
    std::string version;
};
std::vector<std::uint8_t> encode_hello(const hello& h);
hello decode_hello(std::span<const std::uint8_t> p);

std::int64_t monotonic_ns() noexcept;

}  // namespace rct::daemon::upgrade
