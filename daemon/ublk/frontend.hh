// ublk::frontend: the disks rctd exposes as local block devices,
// /dev/ublkbN, through the kernel's ublk driver.
//
// A device has one queue per worker (see queue.hh); its requests go through
// the same disk backend as NBD requests, so tracking and snapshots see them
// alike. Devices are created with USER_RECOVERY | USER_RECOVERY_REISSUE:
// when rctd exits or dies, the kernel keeps /dev/ublkbN (a mounted
// filesystem stays mounted), holds new I/O, and re-issues what was in
// flight once the next rctd takes the device back. Each attachment is
// recorded in STATE/ublk/NAME.json (docs/format/ublk.md) so that the next
// start knows what to recover, and which devices were left behind by disks
// deleted meanwhile (those it removes, so nothing waits on them forever).
//
// Threading: attach, detach, recover and find run on management threads
// (the control API, main at start) and are serialised by one mutex; the
// queues themselves run on the workers.
#pragma once

#include <rct/disk_registry.hh>
#include <rct/thread_annotations.hh>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace rct::daemon {

class worker;

namespace ublk {

class queue;

struct attachment {
    std::string device;  // /dev/ublkbN
    std::uint32_t dev_id = 0;
    unsigned queues = 0;
    unsigned depth = 0;
};

class frontend {
public:
    // recovery_window: how long devices wait for the next rctd once this
    // one is gone (see watchdog.hh); 0 = for ever.
    frontend(disk_registry& reg, const std::vector<std::unique_ptr<worker>>& workers,
             const std::filesystem::path& state_dir, std::chrono::seconds recovery_window);
    // Leaves every device to the kernel for the next rctd to recover. Call
    // after the workers have stopped.
    ~frontend();
    frontend(const frontend&) = delete;
    frontend& operator=(const frontend&) = delete;

    // Exposes disk NAME as a new device and returns its attachment. Throws
    // rct::error: not_found, exists (already attached), unsupported (no
    // ublk driver), io_error.
    attachment attach(const std::string& name);
    // Removes NAME's device (STOP_DEV, DEL_DEV). Throws not_found when the
    // disk has none, busy when something holds the device exclusively (a
    // mounted filesystem) unless forced; forced, its users get EIO.
    void detach(const std::string& name, bool force);
    std::optional<attachment> find(const std::string& name) const;
    std::size_t device_count() const;

    // At start, once the workers run: takes back the devices a previous
    // rctd left (recovery), removes those of disks that are gone, then
    // attaches each disk in `wanted` that has no device yet. Failures are
    // logged; the daemon keeps serving everything else.
    void recover(const std::vector<std::string>& wanted);

private:
    struct device;
    std::unique_ptr<device> create(std::shared_ptr<disk> d, std::uint32_t want_id) REQUIRES(mutex_);
    std::unique_ptr<device> take_over(std::shared_ptr<disk> d, std::uint32_t dev_id);
    void start_queues(device& dev);
    void stop_and_delete(device& dev) REQUIRES(mutex_);
    void watch() const;

    disk_registry& registry_;
    const std::vector<std::unique_ptr<worker>>& workers_;
    const std::filesystem::path state_dir_;
    const std::filesystem::path dir_;  // STATE/ublk
    const std::chrono::seconds recovery_window_;
    mutable rct::mutex mutex_;
    std::map<std::string, std::unique_ptr<device>> devices_ GUARDED_BY(mutex_);
    std::vector<std::vector<std::unique_ptr<queue>>> abandoned_ GUARDED_BY(mutex_);
};

}  // namespace ublk
}  // namespace rct::daemon
