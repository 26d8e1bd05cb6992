// worker: one thread, one io_uring, many connections.
//
// Each worker runs a single event loop over its ring: the sockets of the NBD
// connections it owns, the uring_cmds of the ublk queues it serves, and the
// disk I/O both cause all complete there, so a request is parsed, executed
// and answered on one thread without locks. Other threads talk to a worker only through post(), a mutex-guarded
// mailbox whose eventfd the ring watches. The listener hands new sockets over
// that way; the main thread asks for shutdown that way.
//
// One IORING_OP_TIMEOUT on the ring ticks once a second: each tick hands an
// idle buffer pool's cache back to the OS and checks every connection's
// deadlines (handshake, idle, send), so there is no timer per connection.
// The shutdown deadline has a one-shot timeout of its own, so it is kept to
// the second.
#pragma once

#include "admission.hh"
#include "config.hh"
#include "memory_budget.hh"
#include "nbd/export.hh"
#include "nbd/session_state.hh"

#include <rct/buffer_pool.hh>
#include <rct/disk_registry.hh>
#include <rct/io_ring.hh>
#include <rct/thread_annotations.hh>
#include <rct/unique_fd.hh>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

namespace rct::daemon {

class connection;
namespace ublk {
class queue;
}

// A connection frozen for a live upgrade: its state and its socket.
struct frozen_connection {
    nbd::session_state state;
    unique_fd sock;
};

class worker final : public executor {
public:
    // Creates the ring; throws rct::error when io_uring is unusable. tls
    // (null: none configured) outlives the worker.
    worker(unsigned index, const daemon_config& config, disk_registry& registry, tls_server* tls);
    ~worker();
    worker(const worker&) = delete;
    worker& operator=(const worker&) = delete;

    void start();
    // Any thread. Tasks run on the worker thread in FIFO order.
    void post(std::function<void()> task) override;
    // Any thread: stop reading new requests, finish in-flight ones, close
    // every connection, then leave the loop. Connections still open after
    // config().shutdown_timeout seconds are cut off, their replies dropped.
    void request_stop();
    void join();

    // Any thread; live upgrade (upgrade/handover.hh). Freezes every
    // connection (connection::freeze) and resolves with their states once
    // all are frozen. A connection still sending after freeze_grace has its
    // send stopped, one that cannot park by twice that (a client sending
    // an oversized payload, or not reading a handshake reply) is cut off.
    // Connections that close meanwhile are left out. Call with no new
    // sockets coming (the listener stopped); afterwards the worker serves
    // its ublk queues only, until request_stop().
    std::future<std::vector<frozen_connection>> freeze(std::chrono::milliseconds grace);
    // Worker thread: a connection frozen by another rctd, going on here.
    void resume(frozen_connection c, nbd_export e, admission::ticket slot);

    unsigned connection_count() const noexcept { return live_count_.load(std::memory_order_relaxed); }
    // Any thread: when the loop's one-second timer last ran (service.hh
    // tells a stuck worker by it).
    std::chrono::steady_clock::time_point last_tick() const noexcept
    {
        return std::chrono::steady_clock::time_point(
            std::chrono::steady_clock::duration(last_tick_.load(std::memory_order_relaxed)));
    }

    // Worker thread only.
    io_ring& ring() noexcept { return ring_; }
    buffer_pool& buffers() noexcept { return buffers_; }
    memory_budget& budget() noexcept { return budget_; }
    disk_registry& registry() noexcept { return registry_; }
    const daemon_config& config() const noexcept { return config_; }
    tls_server* tls() const noexcept { return tls_; }
    void adopt(unique_fd sock, std::string peer, admission::ticket slot);
    void retire(connection* c) noexcept;
    // ublk queues this worker serves (ublk/queue.hh); a stopping worker
    // tells them to take no new requests and waits for their busy ones.
    void serve(ublk::queue* q);
    void forget(ublk::queue* q) noexcept;

private:
    class mailbox final : public completion {
    public:
        explicit mailbox(worker& w) : w_(w) {}
        void arm() noexcept;
        void complete(int res, std::uint32_t) noexcept override;

    private:
        worker& w_;
        std::uint64_t counter_ = 0;
    };

    // An IORING_OP_TIMEOUT that calls (w.*fire)() when it expires.
    class timer final : public completion {
    public:
        timer(worker& w, void (worker::*fire)() noexcept) : w_(w), fire_(fire) {}
        void arm(unsigned seconds) noexcept { arm(std::chrono::seconds(seconds)); }
        void arm(std::chrono::milliseconds after) noexcept;
        void complete(int res, std::uint32_t) noexcept override;

    private:
        worker& w_;
        void (worker::*fire_)() noexcept;
        __kernel_timespec when_{};
        bool armed_ = false;
    };

    void loop() noexcept;
    void tick() noexcept;
    void freeze_grace() noexcept;
    void finish_freeze() noexcept;
    void cut_off_all() noexcept;
    void run_tasks() noexcept;
    void reap_retired() noexcept;
    bool drained() const noexcept;

    const unsigned index_;
    const daemon_config& config_;
    disk_registry& registry_;
    tls_server* const tls_;
    io_ring ring_;
    memory_budget budget_;
    buffer_pool buffers_;
    unique_fd event_fd_;
    mailbox mailbox_{*this};
    timer ticker_{*this, &worker::tick};
    timer stop_timer_{*this, &worker::cut_off_all};
    timer freeze_timer_{*this, &worker::freeze_grace};
    std::thread thread_;

    rct::mutex tasks_mutex_;
    std::vector<std::function<void()>> tasks_ GUARDED_BY(tasks_mutex_);

    // Worker thread only.
    std::unordered_set<connection*> live_;
    std::vector<connection*> retired_;
    std::vector<ublk::queue*> queues_;
    bool stopping_ = false;
    std::atomic<unsigned> live_count_{0};
    std::atomic<std::chrono::steady_clock::rep> last_tick_{0};
    // Freezing: the promise freeze() returned, and how far the grace went.
    std::optional<std::promise<std::vector<frozen_connection>>> freeze_;
    std::chrono::milliseconds freeze_grace_{0};
    unsigned grace_rounds_ = 0;
};

}  // namespace rct::daemon
