// ublk::control: the device lifecycle commands of /dev/ublk-control.
//
// Each command is an IORING_OP_URING_CMD on a small private ring (SQE128:
// the 32-byte command does not fit a normal SQE), sent one at a time and
// waited for. Control commands are rare (attach, detach, recovery), so the
// object is made per operation, on a management thread, never on a worker:
// START_DEV and END_USER_RECOVERY block until every queue's worker has armed
// its tags. Failures throw rct::error naming the command and device.
#pragma once

#include "uapi.hh"

#include <rct/unique_fd.hh>

#include <liburing.h>
#include <sys/types.h>

#include <cstdint>
#include <optional>

namespace rct::daemon::ublk {

class control {
public:
    // Throws rct::error(unsupported) naming the ublk_drv module when the
    // kernel has no ublk driver loaded.
    control();
    ~control();
    control(const control&) = delete;
    control& operator=(const control&) = delete;

    // UBLK_F_* the driver supports; 0 before 6.5 (no GET_FEATURES).
    std::uint64_t features() const noexcept { return features_; }
    bool ioctl_encoding() const noexcept { return (features_ & f_cmd_ioctl_encode) != 0; }

    // The driver fills in dev_id (when -1 was asked for) and what it granted.
    ublksrv_ctrl_dev_info add_dev(const ublksrv_ctrl_dev_info& want);
    void set_params(std::uint32_t dev_id, const ublk_params& p);
    void start_dev(std::uint32_t dev_id, pid_t pid);
    void stop_dev(std::uint32_t dev_id);
    void del_dev(std::uint32_t dev_id);
    // Empty when there is no such device.
    std::optional<ublksrv_ctrl_dev_info> dev_info(std::uint32_t dev_id);
    // Waits (up to 30 s) for the kernel to notice the previous server died.
    void start_user_recovery(std::uint32_t dev_id);
    void end_user_recovery(std::uint32_t dev_id, pid_t pid);

private:
    // cqe->res of one command: 0 or a count on success, -errno on failure.
    int command(unsigned nr, std::uint32_t dev_id, std::uint64_t addr = 0, std::uint16_t len = 0,
                std::uint64_t data0 = 0);
    void check(int res, const char* what, std::uint32_t dev_id) const;

    unique_fd fd_;
    io_uring ring_{};
    bool ring_ready_ = false;
    std::uint64_t features_ = 0;
};

}  // namespace rct::daemon::ublk
