// connection: one NBD client, from handshake to close, on one worker.
//
// Two coroutines drive it in turn: handshake() haggles options until GO or
// EXPORT_NAME, then reader() parses requests out of a receive buffer and
// dispatches each to the disk's backend as soon as it is complete, without
// waiting for earlier ones. Completions build their reply in place and queue
// it; one sendmsg at a time drains the queue, gathering every ready reply, so
// replies leave in completion order (the protocol allows any order) and a
// slow request never holds up the ones behind it.
//
// Request objects and their buffers are pooled. The reader stops taking new
// requests while max_inflight are outstanding, and before a request that
// needs a buffer (READ, WRITE, BLOCK_STATUS) it takes the buffer's bytes from
// the worker's memory_budget, holding at most --connection-memory at once;
// bytes come back when the reply has left. So a client that does not read
// its replies stops being read once it holds its share, and the others go on.
//
// Lifetime: the worker owns the object. It ends when the reader has stopped
// (EOF, DISC, protocol violation, stop()) and every outstanding request has
// completed and been answered or dropped; then it retires itself.
//
// Deadlines: the worker's once-a-second tick calls check_deadlines(), which
// cuts the connection off (cut_off(): both directions shut, pending socket
// operations cancelled, replies dropped) when the handshake has not ended
// within handshake_timeout, when queued replies have not moved for
// send_timeout, or, with idle_timeout set, when the client has asked nothing
// for that long and nothing is in flight. The fast path only bumps counters;
// the tick compares them with the last tick's.
#pragma once

#include "../access.hh"
#include "../admission.hh"
#include "../coro.hh"
#include "../memory_budget.hh"
#include "../socket_io.hh"
#include "export.hh"
#include "options.hh"
#include "session_state.hh"
#include "tls.hh"
#include "wire.hh"

#include <rct/backend.hh>
#include <rct/disk.hh>
#include <rct/unique_fd.hh>

#include <sys/socket.h>
#include <sys/uio.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <utility>
#include <string>
#include <vector>

namespace rct::daemon {

class worker;

class connection {
public:
    connection(worker& w, unique_fd sock, std::string peer, admission::ticket slot);
    // A connection another rctd froze (live upgrade): it goes on from where
    // that one stopped. The export must have been resolved by the caller.
    connection(worker& w, unique_fd sock, nbd::session_state st, nbd_export e, admission::ticket slot);
    ~connection();
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;

    void start();

    // Live upgrade. freeze(): stop at the next point where the state is one
    // value: no new request read, in-flight ones finished and their replies
    // sent. frozen() says when it is there. force_freeze(): after a grace,
    // stop a send the client is not reading; its rest goes into the state.
    // take_state(): the state and the socket; the object is then spent
    // (the worker deletes it without closing anything).
    void freeze() noexcept;
    void force_freeze() noexcept;
    bool frozen() const noexcept { return frozen_; }
    bool closing() const noexcept { return retired_ || cut_off_; }
    std::pair<nbd::session_state, unique_fd> take_state();
    // Stop taking requests: those the client already sent are answered
    // NBD_ESHUTDOWN, in-flight ones finish and are answered.
    void stop() noexcept;
    // End the connection now: in-flight requests finish, their replies are
    // dropped (as for a client that hung up).
    void cut_off() noexcept;
    void check_deadlines(std::chrono::steady_clock::time_point now) noexcept;

private:
    struct request final : io_request {
        void done(int res) noexcept override { conn->on_done(*this, res); }

        connection* conn = nullptr;
        request* next = nullptr;  // free list or send queue
        std::uint64_t cookie = 0;
        std::uint16_t type = 0;
        std::uint16_t cmd_flags = 0;
        std::size_t buf_size = 0;  // pool size class of buf
        std::size_t charge = 0;    // bytes of the memory budget it holds
        std::uint32_t hdr_len = 0;
        std::uint64_t data_len = 0;  // bytes of buf sent after hdr
        std::uint64_t started_ns = 0;  // counted in the disk's io_stats (0: not counted)
        bool failed = false;
        std::array<std::byte, 32> hdr{};
    };

    // handshake.cc: the coroutine, then one function per option; each
    // returns what the handshake does next.
    enum class step { next, close, transmit, park };
    detached handshake(bool greet);
    task<step> greeting(bool greet);
    task<step> drain_option();
    task<step> next_option();
    task<step> option_export_name(std::vector<std::byte>& data);
    task<step> option_list(std::uint32_t len);
    task<step> option_info_go(std::uint32_t opt, std::vector<std::byte>& data);
    task<step> option_meta_context(std::uint32_t opt, std::vector<std::byte>& data);
    task<step> option_starttls(std::uint32_t len);
    task<step> error_reply(std::uint32_t opt, std::uint32_t type, std::string_view msg);
    exact_io send_reply(std::uint32_t opt, std::uint32_t type, const void* payload, std::size_t len);
    fill_io fill(std::size_t need);
    std::vector<std::byte> out_;  // handshake replies being sent
    // Empty when there is no such export; why is set to the reason.
    nbd_export lookup_export(std::string_view name, std::string& why) const;
    // May this client open disk (its snapshots follow it)? why when not.
    bool may_open(std::string_view disk, std::string& why) const;
    // The checkpoints whose bitmaps e offers as metadata contexts.
    std::vector<checkpoint_info> offered_checkpoints(const nbd_export& e) const;

    // connection.cc
    detached reader();
    task<int> receive_payload(const nbd::request_header& h, request& rq);
    request& begin_request(const nbd::request_header& h, std::size_t charge, bool needs_buffer) noexcept;
    void answer(const nbd::request_header& h, request& rq, bool needs_buffer) noexcept;
    void dispatch(const nbd::request_header& h, request& rq) noexcept;
    void block_status(request& rq, std::uint64_t offset, std::uint32_t length) noexcept;
    void on_done(request& rq, int res) noexcept;
    void reply_error(request& rq, std::uint32_t nbd_error) noexcept;
    // The disk's io_stats: a request answered from here on, and its reply.
    void count_start(request& rq) noexcept;
    void count_end(request& rq) noexcept;
    void enqueue(request& rq) noexcept;
    void send_more() noexcept;
    void drop_send_queue() noexcept;
    void on_sent(int res) noexcept;
    request* take_request() noexcept;
    void release(request& rq) noexcept;
    void maybe_finish() noexcept;
    void begin_transmission() noexcept;
    void park() noexcept;
    bool parked_by_freeze(long r) const noexcept;
    void maybe_frozen() noexcept;
    // Budget (memory_budget.hh): the bytes h needs; takes them or starts
    // waiting for them (false), resuming the reader's budget_wait_ later.
    std::size_t charge_of(const nbd::request_header& h) const noexcept;
    bool reserve(std::size_t bytes) noexcept;
    void drop_grant() noexcept;
    void wake_reader() noexcept;
    void end_handshake() noexcept;
    std::uint16_t session_transmission_flags(const nbd_export& e) const noexcept;

    class sender final : public completion {
    public:
        explicit sender(connection& c) : c_(c) {}
        void complete(int res, std::uint32_t) noexcept override { c_.on_sent(res); }

    private:
        connection& c_;
    };

    // What the last tick saw, to tell progress from a stall.
    struct progress {
        std::uint64_t requests = 0;
        std::uint64_t sends = 0;
        int unsent = -1;  // SIOCOUTQ
        std::chrono::steady_clock::time_point active;  // last request or nothing in flight
        std::chrono::steady_clock::time_point sent;    // last send progress or nothing queued
    };
    bool send_stalled(std::chrono::steady_clock::time_point now) noexcept;
    bool idle(std::chrono::steady_clock::time_point now) noexcept;
    class budget_waiter final : public memory_budget::waiter {
    public:
        explicit budget_waiter(connection& c) : c_(c) {}
        void admitted() noexcept override;

    private:
        connection& c_;
    };

    worker& worker_;
    unique_fd sock_;
    const std::string peer_;
    admission::ticket slot_;
    const std::chrono::steady_clock::time_point accepted_;
    bool transmitting_ = false;
    bool cut_off_ = false;
    std::uint64_t requests_ = 0;  // headers parsed
    std::uint64_t sends_ = 0;     // sendmsg completions
    progress seen_;
    nbd_export export_;
    bool attached_ = false;

    nbd::negotiated neg_;

    // Who the client is: its Unix credentials (nullopt over TCP), taken at
    // accept, and after STARTTLS its TLS session (tls.hh); sock_ is then the
    // plaintext end of the tunnel.
    const std::optional<unix_peer> cred_;
    const tls_mode tls_mode_;
    std::shared_ptr<const tls_session> tls_;

    // Unparsed input, and the receive waiting for more (to cancel it).
    recv_buffer in_;
    completion* pending_recv_ = nullptr;

    // Live upgrade (session_state.hh): freeze() sets freezing_; the reader
    // or handshake parks at its next wait and records where it stood.
    bool freezing_ = false;
    bool parked_ = false;
    bool frozen_ = false;
    nbd::phase phase_ = nbd::phase::flags;
    std::uint32_t drain_opt_ = 0;
    std::uint64_t drain_left_ = 0;
    std::vector<std::byte> carried_out_;  // a resumed connection's unsent reply bytes
    unsigned queued_ = 0;                  // requests in the send queue
    bool send_stopped_ = false;            // force_freeze(): no more sends
    bool resumed_ = false;                 // built from a session_state

    // Requests.
    std::vector<std::unique_ptr<request>> all_requests_;
    request* free_ = nullptr;
    unsigned inflight_ = 0;
    wakeup slot_free_;

    // Memory budget.
    std::size_t held_ = 0;     // bytes the outstanding requests hold
    std::size_t wanted_ = 0;   // bytes the reader waits for
    std::size_t granted_ = 0;  // ... taken for it by the worker's queue
    ring_wait* budget_wait_ = nullptr;  // the reader's wait, resumed by a NOP
    bool wake_posted_ = false;
    budget_waiter budget_waiter_{*this};

    // Send queue.
    request* send_head_ = nullptr;
    request* send_tail_ = nullptr;
    std::size_t head_sent_ = 0;  // bytes of send_head_'s reply already sent
    bool sending_ = false;
    bool broken_ = false;  // socket failed: replies are dropped, not sent
    sender sender_{*this};
    msghdr msg_{};
    std::array<iovec, 64> iov_{};

    // Lifecycle.
    bool reading_ = false;
    bool stopping_ = false;
    bool retired_ = false;
    std::vector<extent> extents_;  // scratch for BLOCK_STATUS
    std::vector<std::size_t> extent_counts_;
};

}  // namespace rct::daemon
