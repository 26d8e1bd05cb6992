#include "frontend.hh"

#include "../worker.hh"
#include "control.hh"
#include "queue.hh"
#include "record.hh"
#include "watchdog.hh"

#include <rct/error.hh>
#include <rct/log.hh>
#include <rct/small_file.hh>

#include <fmt/format.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <future>
#include <thread>

namespace rct::daemon::ublk {
namespace {

// 128 tags of up to 512 KiB per queue, as ublksrv does: deep enough for
// fio at QD128 per queue, and the buffers are only backed once touched.
constexpr unsigned default_depth = 128;
constexpr std::uint32_t default_max_io = 512 * 1024;
constexpr std::uint32_t any_dev_id = 0xffffffff;
constexpr auto finish_timeout = std::chrono::seconds(30);

std::string device_path(std::uint32_t id) { return "/dev/ublkb" + std::to_string(id); }

// Whether something holds the block device exclusively: a mounted
// filesystem, swap, a device-mapper or md table on top. Removing the device
// under them turns their I/O into errors, so detach refuses unless forced.
bool claimed(const std::string& path)
{
    unique_fd fd(::open(path.c_str(), O_RDONLY | O_EXCL | O_CLOEXEC));
    return !fd && errno == EBUSY;
}

// udev may hold the new char device open for a moment (ublksrv#176).
unique_fd open_cdev(std::uint32_t id)
{
    const std::string path = "/dev/ublkc" + std::to_string(id);
    for (int attempt = 0;; ++attempt) {
        unique_fd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
        if (fd) {
            return fd;
        }
        const int err = errno;
        if ((err != EBUSY && err != ENOENT) || attempt == 50) {
            throw_errno("cannot open " + path, err);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
}

ublk_params params_for(std::uint64_t size, std::uint32_t max_io)
{
    ublk_params p{};
    p.len = sizeof p;
    p.types = UBLK_PARAM_TYPE_BASIC | UBLK_PARAM_TYPE_DISCARD;
    // A volatile cache with FUA: the kernel sends FLUSH and FUA, which the
    // backend makes durable, exactly as NBD's flush and FUA.
    p.basic.attrs = UBLK_ATTR_VOLATILE_CACHE | UBLK_ATTR_FUA;
    p.basic.logical_bs_shift = 9;
    p.basic.physical_bs_shift = 12;
    p.basic.io_min_shift = 12;
    p.basic.io_opt_shift = 12;
    p.basic.max_sectors = max_io >> 9;
    p.basic.dev_sectors = size >> 9;
    // Discard punches holes and write-zeroes may too: 4 KiB is the
    // filesystem block under the data file.
    p.discard.discard_granularity = 4096;
    p.discard.max_discard_sectors = 1u << 21;
    p.discard.max_write_zeroes_sectors = 1u << 21;
    p.discard.max_discard_segments = 1;
    return p;
}

}  // namespace

struct frontend::device {
    std::shared_ptr<disk> d;
    ublksrv_ctrl_dev_info info{};
    bool ioctl_encoding = false;
    unique_fd cdev;
    std::vector<std::unique_ptr<queue>> queues;
    std::vector<worker*> owners;  // owners[i] serves queues[i]
    std::atomic<unsigned> finished{0};
    std::promise<void> all_finished;

    attachment describe() const
    {
        return {device_path(info.dev_id), info.dev_id, info.nr_hw_queues, info.queue_depth};
    }
};

frontend::frontend(disk_registry& reg, const std::vector<std::unique_ptr<worker>>& workers,
                   const std::filesystem::path& state_dir, std::chrono::seconds recovery_window)
    : registry_(reg), workers_(workers), state_dir_(state_dir), dir_(state_dir / "ublk"),
      recovery_window_(recovery_window)
{
    persist::make_dirs(dir_);
}

frontend::~frontend()
{
    rct::lock_guard lock(mutex_);
    for (auto& [name, dev] : devices_) {
        dev->d->detach_client(dev->cdev.get());
        log::info("ublk: {} stays as {} for the next rctd to recover", name, device_path(dev->info.dev_id));
    }
}

void frontend::start_queues(device& dev)
{
    const unsigned n = dev.info.nr_hw_queues;
    std::vector<std::future<void>> started;
    for (unsigned q = 0; q < n; ++q) {
        const queue_shape shape{q, dev.info.queue_depth, dev.info.max_io_buf_bytes, dev.ioctl_encoding};
        dev.queues.push_back(std::make_unique<queue>(dev.d, dev.cdev.get(), shape, [&dev, n] {
            if (dev.finished.fetch_add(1) + 1 == n) {
                dev.all_finished.set_value();
            }
        }));
        worker* w = workers_[q % workers_.size()].get();
        dev.owners.push_back(w);
        auto done = std::make_shared<std::promise<void>>();
        started.push_back(done->get_future());
        queue* qp = dev.queues.back().get();
        w->post([w, qp, done] {
            try {
                qp->start(w->ring());
                w->serve(qp);
                done->set_value();
            } catch (...) {
                done->set_exception(std::current_exception());
            }
        });
    }
    // Rethrows the first failure. START_DEV would otherwise wait forever
    // for tags that were never armed.
    for (auto& f : started) {
        f.get();
    }
}

std::unique_ptr<frontend::device> frontend::create(std::shared_ptr<disk> d, std::uint32_t want_id)
{
    control ctrl;
    auto dev = std::make_unique<device>();
    dev->d = std::move(d);
    dev->ioctl_encoding = ctrl.ioctl_encoding();

    ublksrv_ctrl_dev_info want{};
    want.nr_hw_queues = static_cast<std::uint16_t>(std::min<std::size_t>(workers_.size(), 32));
    want.queue_depth = default_depth;
    want.max_io_buf_bytes = default_max_io;
    want.dev_id = want_id;
    want.ublksrv_pid = ::getpid();
    want.flags = f_user_recovery | f_user_recovery_reissue | (dev->ioctl_encoding ? f_cmd_ioctl_encode : 0);
    if (ctrl.features() != 0 && (ctrl.features() & want.flags) != want.flags) {
        // 6.1-6.4 cannot say what they support, but know recovery.
        throw error(errc::unsupported, fmt::format("this kernel's ublk driver lacks user recovery (features {:#x})",
                                                   ctrl.features()));
    }
    try {
        dev->info = ctrl.add_dev(want);
    } catch (const error& e) {
        if (want_id == any_dev_id || e.code() != errc::busy) {
            throw;
        }
        want.dev_id = any_dev_id;  // that number is taken now: any will do
        dev->info = ctrl.add_dev(want);
    }
    const std::uint32_t id = dev->info.dev_id;
    try {
        ctrl.set_params(id, params_for(dev->d->size(), dev->info.max_io_buf_bytes));
        dev->cdev = open_cdev(id);
        start_queues(*dev);
        ctrl.start_dev(id, ::getpid());
    } catch (...) {
        // The queues (if any armed) go with the device: STOP_DEV aborts
        // their tags, and DEL_DEV waits for nothing once cdev is closed.
        try {
            stop_and_delete(*dev);
        } catch (const std::exception& e) {
            log::error("ublk: cleaning up device {} failed: {}", id, e.what());
        }
        throw;
    }
    return dev;
}

std::unique_ptr<frontend::device> frontend::take_over(std::shared_ptr<disk> d, std::uint32_t dev_id)
{
    control ctrl;
    const auto info = ctrl.dev_info(dev_id);
    if (!info) {
        return nullptr;
    }
    auto dev = std::make_unique<device>();
    dev->d = std::move(d);
    dev->info = *info;
    dev->ioctl_encoding = ctrl.ioctl_encoding();
    if (info->state == state_dead || !(info->flags & f_user_recovery)) {
        // Stopped, or not made by us for recovery: start afresh.
        ctrl.del_dev(dev_id);
        return nullptr;
    }
    // The device keeps its shape (the driver refuses SET_PARAMS during
    // recovery): we serve the queues it has, whatever --workers says now.
    if (info->nr_hw_queues == 0 || info->queue_depth == 0) {
        throw error(errc::io_error, fmt::format("ublk device {} reports no queues", dev_id));
    }
    ctrl.start_user_recovery(dev_id);
    dev->cdev = open_cdev(dev_id);
    start_queues(*dev);
    ctrl.end_user_recovery(dev_id, ::getpid());
    return dev;
}

void frontend::stop_and_delete(device& dev)
{
    control ctrl;
    const std::uint32_t id = dev.info.dev_id;
    bool stopped = true;
    for (auto& q : dev.queues) {
        q->expect_abort();
    }
    try {
        ctrl.stop_dev(id);
    } catch (const error& e) {
        // Never started (attach failing half way): the tags are still
        // armed, and only the closing of our fds will drop them.
        log::debug("ublk: STOP_DEV {}: {}", id, e.what());
        stopped = false;
    }
    if (!stopped && !dev.queues.empty()) {
        // Armed tags pin the char device until our rings go away, so
        // DEL_DEV would wait forever. The device never got its block
        // device (START_DEV failed), so nothing can wait on it; its char
        // device goes when this process does.
        abandoned_.push_back(std::move(dev.queues));
        throw error(errc::io_error, fmt::format("ublk device {} could not be stopped; it goes when rctd exits", id));
    }
    if (!dev.queues.empty()) {
        auto finished = dev.all_finished.get_future();
        if (finished.wait_for(finish_timeout) != std::future_status::ready) {
            log::error("ublk: device {} did not release its queues within {} s", id, finish_timeout.count());
        }
    }
    // Workers drop their pointers before the queues (and their mappings) go.
    std::vector<std::future<void>> forgotten;
    for (std::size_t i = 0; i < dev.queues.size(); ++i) {
        auto done = std::make_shared<std::promise<void>>();
        forgotten.push_back(done->get_future());
        worker* w = dev.owners[i];
        queue* qp = dev.queues[i].get();
        w->post([w, qp, done] {
            w->forget(qp);
            done->set_value();
        });
    }
    for (auto& f : forgotten) {
        f.wait();
    }
    dev.queues.clear();
    dev.cdev.reset();
    ctrl.del_dev(id);
}

void frontend::watch() const
{
    if (recovery_window_.count() > 0) {
        start_watchdog(state_dir_, recovery_window_);
    }
}

attachment frontend::attach(const std::string& name)
{
    auto d = registry_.find(name);
    if (!d) {
        throw error(errc::not_found, "no disk named '" + name + "'");
    }
    rct::lock_guard lock(mutex_);
    if (auto it = devices_.find(name); it != devices_.end()) {
        throw error(errc::exists, fmt::format("disk '{}' is already attached as {}", name,
                                              device_path(it->second->info.dev_id)));
    }
    watch();
    auto dev = create(d, any_dev_id);
    try {
        write_record(dir_, {name, dev->d->id(), dev->info.dev_id});
    } catch (...) {
        stop_and_delete(*dev);
        throw;
    }
    d->attach_client(dev->cdev.get());
    const attachment a = dev->describe();
    devices_.emplace(name, std::move(dev));
    log::info("ublk: attached disk {} as {} ({} queue(s) of {} tags)", name, a.device, a.queues, a.depth);
    return a;
}

void frontend::detach(const std::string& name, bool force)
{
    rct::lock_guard lock(mutex_);
    auto it = devices_.find(name);
    if (it == devices_.end()) {
        throw error(errc::not_found, "disk '" + name + "' is not attached to a ublk device");
    }
    device& dev = *it->second;
    const int cdev = dev.cdev.get();
    const std::string path = device_path(dev.info.dev_id);
    if (!force && claimed(path)) {
        throw error(errc::busy, fmt::format("{} (disk '{}') is in use: mounted, or held by swap, device-mapper "
                                            "or md; unmount it first, or force the detach (its users get I/O errors)",
                                            path, name));
    }
    stop_and_delete(dev);
    dev.d->detach_client(cdev);
    devices_.erase(it);
    remove_record(dir_, name);
    log::info("ublk: detached disk {} ({} removed)", name, path);
}

std::size_t frontend::device_count() const
{
    rct::lock_guard lock(mutex_);
    return devices_.size();
}

std::optional<attachment> frontend::find(const std::string& name) const
{
    rct::lock_guard lock(mutex_);
    auto it = devices_.find(name);
    if (it == devices_.end()) {
        return std::nullopt;
    }
    return it->second->describe();
}

void frontend::recover(const std::vector<std::string>& wanted)
{
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
        const auto& p = entry.path();
        if (p.extension() != ".json") {
            continue;
        }
        const auto rec = read_record(p);
        if (!rec) {
            log::error("ublk: ignoring {}: not a valid rct-ublk record (see docs/format/ublk.md)", p.string());
            continue;
        }
        const std::string& name = rec->disk;
        const std::uint32_t dev_id = rec->dev_id;
        try {
            auto d = registry_.find(name);
            rct::lock_guard lock(mutex_);
            if (!d || d->id() != rec->disk_id) {
                // The disk was deleted (or recreated) while rctd was down:
                // its device would otherwise hold I/O forever.
                control ctrl;
                if (auto info = ctrl.dev_info(dev_id)) {
                    if (info->state != state_dead) {
                        ctrl.stop_dev(dev_id);
                    }
                    ctrl.del_dev(dev_id);
                }
                remove_record(dir_, name);
                log::notice("ublk: removed device {} of disk {}, which no longer exists", device_path(dev_id), name);
                continue;
            }
            watch();
            auto dev = take_over(d, dev_id);
            const bool recovered = dev != nullptr;
            if (!dev) {
                dev = create(d, dev_id);
                write_record(dir_, {name, dev->d->id(), dev->info.dev_id});
            }
            d->attach_client(dev->cdev.get());
            log::notice("ublk: {} disk {} as {}", recovered ? "recovered" : "re-attached", name,
                        device_path(dev->info.dev_id));
            devices_.emplace(name, std::move(dev));
        } catch (const std::exception& e) {
            log::error("ublk: cannot recover disk {} (device {}): {}", name, device_path(dev_id), e.what());
        }
    }
    for (const auto& name : wanted) {
        if (find(name)) {
            continue;
        }
        try {
            attach(name);
        } catch (const std::exception& e) {
            log::error("ublk: cannot attach disk {} at start: {}", name, e.what());
        }
    }
}

}  // namespace rct::daemon::ublk
