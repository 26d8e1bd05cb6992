#include "worker.hh"

#include "nbd/connection.hh"
#include "ublk/queue.hh"

#include <rct/error.hh>
#include <rct/log.hh>

#include <fmt/format.h>
#include <pthread.h>
#include <sys/eventfd.h>

#include <algorithm>
#include <cerrno>
#include <future>

namespace rct::daemon {

worker::worker(unsigned index, const daemon_config& config, disk_registry& registry, tls_server* tls)
    : index_(index), config_(config), registry_(registry), tls_(tls), ring_(1024),
      budget_(config.memory_budget / config.workers),
      // Idle buffers are memory the budget no longer sees: half of it at
      // most, and none once the pool has been idle a second or two.
      buffers_(std::min(std::size_t{64} << 20, budget_.limit() / 2)), event_fd_(::eventfd(0, EFD_CLOEXEC))
{
    if (!event_fd_) {
        throw_errno("eventfd", errno);
    }
    ring_.set_executor(this);
}

worker::~worker()
{
    // Still running when its owner unwinds (a start that failed after the
    // workers started): stop it first, or the join would wait for ever.
    if (thread_.joinable()) {
        request_stop();
    }
    join();
    reap_retired();
    for (connection* c : live_) {
        delete c;
    }
}

void worker::start()
{
    // The ring is enabled by the thread that will own it; a failure there is
    // reported back here so startup fails with the reason.
    std::promise<void> enabled;
    auto ready = enabled.get_future();
    thread_ = std::thread([this, &enabled] {
        ::pthread_setname_np(::pthread_self(), fmt::format("rct-worker-{}", index_).c_str());
        try {
            ring_.enable();
            ring_.limit_workers(config_.io_threads);
            mailbox_.arm();
            ticker_.arm(1);
            last_tick_.store(std::chrono::steady_clock::now().time_since_epoch().count(), std::memory_order_relaxed);
        } catch (...) {
            enabled.set_exception(std::current_exception());
            return;
        }
        enabled.set_value();
        loop();
    });
    try {
        ready.get();
    } catch (...) {
        thread_.join();
        throw;
    }
}

void worker::post(std::function<void()> task)
{
    {
        rct::lock_guard lock(tasks_mutex_);
        tasks_.push_back(std::move(task));
    }
    const std::uint64_t one = 1;
    // The eventfd counter saturates long after any realistic backlog; a
    // failed write can only mean the fd is gone, i.e. we are shutting down.
    [[maybe_unused]] auto n = ::write(event_fd_.get(), &one, sizeof one);
}

void worker::request_stop()
{
    post([this] {
        stopping_ = true;
        stop_timer_.arm(config_.shutdown_timeout);
        for (connection* c : live_) {
            c->stop();
        }
        for (ublk::queue* q : queues_) {
            q->stop();
        }
    });
}

void worker::join()
{
    if (thread_.joinable()) {
        thread_.join();
    }
}

void worker::adopt(unique_fd sock, std::string peer, admission::ticket slot)
{
    if (stopping_) {
        return;  // the socket closes; the client sees a refused handshake
    }
    auto* c = new connection(*this, std::move(sock), std::move(peer), std::move(slot));
    live_.insert(c);
    live_count_.fetch_add(1, std::memory_order_relaxed);
    c->start();
}

std::future<std::vector<frozen_connection>> worker::freeze(std::chrono::milliseconds grace)
{
    auto p = std::make_shared<std::promise<std::vector<frozen_connection>>>();
    auto f = p->get_future();
    post([this, p, grace] {
        freeze_.emplace(std::move(*p));
        freeze_grace_ = grace;
        grace_rounds_ = 0;
        for (connection* c : live_) {
            c->freeze();
        }
        freeze_timer_.arm(grace);
    });
    return f;
}

void worker::freeze_grace() noexcept
{
    if (!freeze_) {
        return;
    }
    ++grace_rounds_;
    for (connection* c : live_) {
        if (c->frozen() || c->closing()) {
            continue;
        }
        if (grace_rounds_ == 1) {
            c->force_freeze();
        } else {
            RCT_LOG_LIMITED(log::level::warning,
                            "worker {}: a client could not be frozen for the upgrade within {} ms; cutting it off",
                            index_, 2 * freeze_grace_.count());
            c->cut_off();
        }
    }
    if (grace_rounds_ == 1) {
        freeze_timer_.arm(freeze_grace_);
    }
}

void worker::finish_freeze() noexcept
{
    std::vector<connection*> frozen;
    for (connection* c : live_) {
        if (c->frozen()) {
            frozen.push_back(c);
        } else if (!c->closing()) {
            return;  // not there yet
        }
    }
    if (live_.size() != frozen.size() + retired_.size()) {
        return;  // a closing one has not retired yet
    }
    std::vector<frozen_connection> states;
    try {
        states.reserve(frozen.size());
        for (connection* c : frozen) {
            auto [st, sock] = c->take_state();
            states.push_back({std::move(st), std::move(sock)});
            live_.erase(c);
            live_count_.fetch_sub(1, std::memory_order_relaxed);
            delete c;
        }
        freeze_->set_value(std::move(states));
    } catch (...) {
        freeze_->set_exception(std::current_exception());
    }
    freeze_.reset();
}

void worker::resume(frozen_connection fc, nbd_export e, admission::ticket slot)
{
    auto* c = new connection(*this, std::move(fc.sock), std::move(fc.state), std::move(e), std::move(slot));
    live_.insert(c);
    live_count_.fetch_add(1, std::memory_order_relaxed);
    c->start();
}

void worker::tick() noexcept
{
    const auto now = std::chrono::steady_clock::now();
    last_tick_.store(now.time_since_epoch().count(), std::memory_order_relaxed);
    buffers_.trim_if_idle();
    // A connection that closes here only joins retired_; live_ stays as it is.
    for (connection* c : live_) {
        c->check_deadlines(now);
    }
    if (!stopping_ || !live_.empty()) {
        ticker_.arm(1);
    }
}

void worker::cut_off_all() noexcept
{
    if (live_.size() > retired_.size()) {
        log::notice("worker {}: cutting off {} client(s) still connected after --shutdown-timeout {} s", index_,
                    live_.size() - retired_.size(), config_.shutdown_timeout);
    }
    for (connection* c : live_) {
        c->cut_off();
    }
}

void worker::serve(ublk::queue* q)
{
    queues_.push_back(q);
    if (stopping_) {
        q->stop();
    }
}

void worker::forget(ublk::queue* q) noexcept { std::erase(queues_, q); }

bool worker::drained() const noexcept
{
    return stopping_ && live_.size() == retired_.size() &&
           std::all_of(queues_.begin(), queues_.end(), [](const ublk::queue* q) { return q->busy() == 0; });
}

void worker::retire(connection* c) noexcept
{
    // Freed at the top of the next loop turn: the caller is still on c's stack.
    retired_.push_back(c);
}

void worker::reap_retired() noexcept
{
    for (connection* c : retired_) {
        live_.erase(c);
        live_count_.fetch_sub(1, std::memory_order_relaxed);
        delete c;
    }
    retired_.clear();
}

void worker::run_tasks() noexcept
{
    std::vector<std::function<void()>> batch;
    {
        rct::lock_guard lock(tasks_mutex_);
        batch.swap(tasks_);
    }
    for (auto& t : batch) {
        try {
            t();
        } catch (const std::exception& e) {
            log::error("worker {}: task failed: {}", index_, e.what());
        }
    }
}

void worker::loop() noexcept
{
    log::debug("worker {} running (ring flags {:#x})", index_, ring_.setup_flags());
    while (!drained()) {
        const int r = ring_.run(true);
        if (r < 0) {
            log::error("worker {}: io_uring_enter failed: {}", index_, std::strerror(-r));
            break;
        }
        reap_retired();
        if (freeze_) {
            finish_freeze();
        }
    }
    reap_retired();
    // Hands the last ublk commits to the driver; requests left unanswered
    // are re-issued to the next rctd.
    ring_.run(false);
    log::debug("worker {} stopped", index_);
}

void worker::timer::arm(std::chrono::milliseconds after) noexcept
{
    if (!armed_) {
        armed_ = true;
        when_ = {static_cast<long long>(after.count() / 1000), static_cast<long long>(after.count() % 1000) * 1000000};
        io_uring_prep_timeout(w_.ring_.sqe(this), &when_, 0, 0);
    }
}

void worker::timer::complete(int, std::uint32_t) noexcept
{
    armed_ = false;
    (w_.*fire_)();
}

void worker::mailbox::arm() noexcept
{
    io_uring_prep_read(w_.ring_.sqe(this), w_.event_fd_.get(), &counter_, sizeof counter_, 0);
}

void worker::mailbox::complete(int res, std::uint32_t) noexcept
{
    if (res < 0 && res != -EINTR && res != -EAGAIN) {
        log::error("worker {}: mailbox read failed: {}", w_.index_, std::strerror(-res));
    }
    w_.run_tasks();
    arm();
}

}  // namespace rct::daemon
