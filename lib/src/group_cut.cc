#include <rct/group_cut.hh>

#include <rct/error.hh>
#include <rct/log.hh>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>
#include <functional>
#include <latch>
#include <mutex>
#include <thread>

namespace rct {
namespace {

using cut_fn = std::function<snapshot_info(disk&, const std::function<void()>& on_cut)>;
using undo_fn = std::function<void(disk&)>;

// Every member's barrier, closed for the scope (opened early by open()).
class barriers {
public:
    explicit barriers(const std::vector<disk*>& members)
    {
        try {
            for (disk* d : members) {
                d->hold_writes();
                held_.push_back(d);
            }
        } catch (...) {
            open();
            throw;
        }
    }
    ~barriers() { open(); }
    barriers(const barriers&) = delete;
    barriers& operator=(const barriers&) = delete;
    void open() noexcept
    {
        for (disk* d : held_) {
            d->release_writes();
        }
        held_.clear();
    }

private:
    std::vector<disk*> held_;
};

// The members sorted by name (the order their locks are taken in), each
// once, each tracked.
std::vector<disk*> members_of(const std::vector<std::shared_ptr<disk>>& disks)
{
    if (disks.size() < 2) {
        throw error(errc::invalid_argument, "a consistency group needs at least two disks");
    }
    std::vector<disk*> order;
    for (const auto& d : disks) {
        if (d->tracking() == nullptr) {
            throw error(errc::invalid_argument,
                        fmt::format("disk {} has change tracking off, so it cannot be cut in a group", d->name()));
        }
        order.push_back(d.get());
    }
    std::sort(order.begin(), order.end(), [](disk* a, disk* b) { return a->name() < b->name(); });
    const auto twice = std::adjacent_find(order.begin(), order.end());
    if (twice != order.end()) {
        throw error(errc::invalid_argument, fmt::format("disk {} is named twice in the group", (*twice)->name()));
    }
    return order;
}

// One thread per member, started before the barriers close so that the
// writes they hold wait for the cuts alone, not for thread creation.
class cutters {
public:
    cutters(const std::vector<std::shared_ptr<disk>>& disks, const cut_fn& cut) : cuts_(disks.size())
    {
        results_.resize(disks.size());
        errors_.resize(disks.size());
        try {
            for (std::size_t i = 0; i < disks.size(); ++i) {
                threads_.emplace_back([this, i, &cut, d = disks[i]] { run(i, *d, cut); });
            }
        } catch (...) {
            abandon();
            throw;
        }
    }
    ~cutters() { abandon(); }
    cutters(const cutters&) = delete;
    cutters& operator=(const cutters&) = delete;

    // Every member is cut (or has failed) once this returns.
    void cut_all()
    {
        release();
        cuts_.wait();
    }
    // Waits for the members' cuts to be made durable.
    void join() noexcept
    {
        release();
        for (auto& t : threads_) {
            if (t.joinable()) {
                t.join();
            }
        }
        threads_.clear();
    }
    std::vector<snapshot_info>& results() { return results_; }
    std::vector<std::exception_ptr>& errors() { return errors_; }

private:
    void run(std::size_t i, disk& d, const cut_fn& cut) noexcept
    {
        go_.wait();
        bool counted = false;
        const auto once = [&] {
            if (!counted) {
                counted = true;
                cuts_.count_down();
            }
        };
        try {
            if (abandoned_.load()) {
                throw error(errc::io_error, "the group cut was abandoned");
            }
            results_[i] = cut(d, once);
        } catch (...) {
            errors_[i] = std::current_exception();
        }
        once();
    }
    void release() noexcept
    {
        if (!released_) {
            released_ = true;
            go_.count_down();
        }
    }
    // The members not yet cut will not be.
    void abandon() noexcept
    {
        abandoned_.store(true);
        join();
    }

    bool released_ = false;
    std::latch go_{1};
    std::latch cuts_;
    std::atomic<bool> abandoned_{false};
    std::vector<snapshot_info> results_;
    std::vector<std::exception_ptr> errors_;
    std::vector<std::thread> threads_;
};

group_result cut_group(const std::vector<std::shared_ptr<disk>>& disks, const std::string& name, const cut_fn& cut,
                       const undo_fn& undo)
{
    const std::vector<disk*> order = members_of(disks);
    std::vector<std::unique_lock<std::mutex>> locks;
    for (disk* d : order) {
        locks.push_back(d->manage());
    }
    for (disk* d : order) {
        if (d->tracking()->checkpoint_epoch(name)) {
            throw error(errc::exists, fmt::format("disk {} already has a checkpoint named {}", d->name(), name));
        }
    }
    cutters c(disks, cut);
    group_result out;
    {
        barriers held(order);
        const auto t0 = std::chrono::steady_clock::now();
        c.cut_all();
        held.open();
        out.held_ns = static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
    }
    c.join();
    const auto failed = std::find_if(c.errors().begin(), c.errors().end(), [](auto& e) { return e != nullptr; });
    if (failed == c.errors().end()) {
        out.members = std::move(c.results());
        return out;
    }
    // All or nothing: every member loses what it got, the failed ones too (a
    // snapshot can fail after its checkpoint was sealed). The name was no
    // member's before, and the locks kept it so: whatever has it now is ours.
    for (auto* d : order) {
        try {
            undo(*d);
        } catch (const error& e) {
            // not_found: that member got nothing; invalid_argument: a name
            // no member could take.
            if (e.code() != errc::not_found && e.code() != errc::invalid_argument) {
                log::error("group cut {}: cannot undo disk {}'s part: {}", name, d->name(), e.what());
            }
        }
    }
    std::rethrow_exception(*failed);
}

}  // namespace

group_result snapshot_group(const std::vector<std::shared_ptr<disk>>& disks, const std::string& name)
{
    for (const auto& d : disks) {
        if (d->snapshots() == nullptr) {
            throw error(errc::invalid_argument, fmt::format("disk {} has no snapshot store", d->name()));
        }
    }
    return cut_group(
        disks, name, [&name](disk& d, const std::function<void()>& on_cut) { return d.snapshots()->snapshot(name, on_cut); },
        [&name](disk& d) {
            try {
                d.snapshots()->delete_snapshot(name, true);
            } catch (const error& e) {
                if (e.code() != errc::not_found) {
                    throw;
                }
                // No snapshot recorded (it failed after its checkpoint):
                // the checkpoint still goes.
            }
            d.tracking()->delete_checkpoint(name);
        });
}

group_result checkpoint_group(const std::vector<std::shared_ptr<disk>>& disks, const std::string& name)
{
    return cut_group(
        disks, name,
        [&name](disk& d, const std::function<void()>& on_cut) {
            snapshot_info s;
            s.checkpoint = d.tracking()->checkpoint(name, [&](std::uint64_t) { on_cut(); });
            return s;
        },
        [&name](disk& d) { d.tracking()->delete_checkpoint(name); });
}

}  // namespace rct
