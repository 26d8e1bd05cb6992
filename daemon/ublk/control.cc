#include "control.hh"

#include <rct/error.hh>

#include <fmt/format.h>

#include <fcntl.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

namespace rct::daemon::ublk {
namespace {

constexpr const char* control_path = "/dev/ublk-control";

const char* command_name(unsigned nr)
{
    switch (nr) {
    case cmd_get_dev_info: return "GET_DEV_INFO";
    case cmd_add_dev: return "ADD_DEV";
    case cmd_del_dev: return "DEL_DEV";
    case cmd_start_dev: return "START_DEV";
    case cmd_stop_dev: return "STOP_DEV";
    case cmd_set_params: return "SET_PARAMS";
    case cmd_start_user_recovery: return "START_USER_RECOVERY";
    case cmd_end_user_recovery: return "END_USER_RECOVERY";
    case cmd_get_features: return "GET_FEATURES";
    case cmd_del_dev_async: return "DEL_DEV_ASYNC";
    }
    return "command";
}

}  // namespace

control::control()
{
    fd_.reset(::open(control_path, O_RDWR | O_CLOEXEC));
    if (!fd_) {
        const int err = errno;
        if (err == ENOENT || err == ENODEV || err == ENXIO) {
            throw error(errc::unsupported,
                        fmt::format("this kernel has no ublk driver ({} is missing): load the ublk_drv module "
                                    "(modprobe ublk_drv; Linux 6.0 or newer with CONFIG_BLK_DEV_UBLK)",
                                    control_path));
        }
        throw error(errc::io_error, fmt::format("cannot open {}: {}", control_path, std::strerror(err)));
    }
    if (const int r = io_uring_queue_init(4, &ring_, IORING_SETUP_SQE128); r < 0) {
        throw error(errc::io_error, fmt::format("cannot create the ublk control ring: {}", std::strerror(-r)));
    }
    ring_ready_ = true;
    // GET_FEATURES exists only ioctl-encoded (6.5+); older drivers refuse it.
    std::uint64_t features = 0;
    if (command(cmd_get_features, 0, reinterpret_cast<std::uintptr_t>(&features), sizeof features) == 0) {
        features_ = features;
    }
}

control::~control()
{
    if (ring_ready_) {
        io_uring_queue_exit(&ring_);
    }
}

int control::command(unsigned nr, std::uint32_t dev_id, std::uint64_t addr, std::uint16_t len, std::uint64_t data0)
{
    // An SQE128 entry is two io_uring_sqe slots long; the command spills
    // into the second.
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) {
        return -EBUSY;  // cannot happen: one command at a time on a 4-entry ring
    }
    std::memset(sqe, 0, 2 * sizeof *sqe);
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = fd_.get();
    sqe->cmd_op = nr == cmd_get_features    ? u_cmd_get_features
                  : nr == cmd_del_dev_async ? u_cmd_del_dev_async
                  : ioctl_encoding()        ? ctrl_ioctl(nr)
                                            : nr;
    auto* c = reinterpret_cast<ublksrv_ctrl_cmd*>(sqe->cmd);
    c->dev_id = dev_id;
    c->queue_id = 0xffff;  // not a per-queue command
    c->addr = addr;
    c->len = len;
    c->data[0] = data0;
    int r = io_uring_submit_and_wait(&ring_, 1);
    while (r == -EINTR) {
        r = io_uring_submit_and_wait(&ring_, 1);
    }
    if (r < 0) {
        return r;
    }
    io_uring_cqe* cqe = nullptr;
    if (const int w = io_uring_peek_cqe(&ring_, &cqe); w < 0) {
        return w;
    }
    const int res = cqe->res;
    io_uring_cqe_seen(&ring_, cqe);
    return res;
}

void control::check(int res, const char* what, std::uint32_t dev_id) const
{
    if (res >= 0) {
        return;
    }
    const errc code = res == -ENODEV ? errc::not_found : res == -EBUSY || res == -EEXIST ? errc::busy : errc::io_error;
    throw error(code, fmt::format("ublk {} of device {} failed: {}", what, dev_id, std::strerror(-res)));
}

ublksrv_ctrl_dev_info control::add_dev(const ublksrv_ctrl_dev_info& want)
{
    ublksrv_ctrl_dev_info info = want;
    check(command(cmd_add_dev, want.dev_id, reinterpret_cast<std::uintptr_t>(&info), sizeof info),
          command_name(cmd_add_dev), want.dev_id);
    return info;
}

void control::set_params(std::uint32_t dev_id, const ublk_params& p)
{
    ublk_params copy = p;
    check(command(cmd_set_params, dev_id, reinterpret_cast<std::uintptr_t>(&copy), sizeof copy),
          command_name(cmd_set_params), dev_id);
}

void control::start_dev(std::uint32_t dev_id, pid_t pid)
{
    check(command(cmd_start_dev, dev_id, 0, 0, static_cast<std::uint64_t>(pid)), command_name(cmd_start_dev), dev_id);
}

void control::stop_dev(std::uint32_t dev_id)
{
    check(command(cmd_stop_dev, dev_id), command_name(cmd_stop_dev), dev_id);
}

void control::del_dev(std::uint32_t dev_id)
{
    // DEL_DEV waits until the last reference to the device is gone, and a
    // filesystem still mounted on it (a forced detach, a watchdog clean-up)
    // holds one until it is unmounted: the caller would hang that long.
    // DEL_DEV_ASYNC removes the device now and lets the kernel free it
    // later; drivers before 6.9 do not know it.
    if (ioctl_encoding()) {
        const int r = command(cmd_del_dev_async, dev_id);
        if (r != -EOPNOTSUPP && r != -EINVAL) {
            check(r, command_name(cmd_del_dev_async), dev_id);
            return;
        }
    }
    check(command(cmd_del_dev, dev_id), command_name(cmd_del_dev), dev_id);
}

std::optional<ublksrv_ctrl_dev_info> control::dev_info(std::uint32_t dev_id)
{
    ublksrv_ctrl_dev_info info{};
    const int r = command(cmd_get_dev_info, dev_id, reinterpret_cast<std::uintptr_t>(&info), sizeof info);
    if (r == -ENODEV) {
        return std::nullopt;
    }
    check(r, command_name(cmd_get_dev_info), dev_id);
    return info;
}

void control::start_user_recovery(std::uint32_t dev_id)
{
    // EBUSY until the driver has seen the old server's ring go and has
    // quiesced the queue; that follows the old process's exit closely.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    int r = command(cmd_start_user_recovery, dev_id);
    while (r == -EBUSY && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        r = command(cmd_start_user_recovery, dev_id);
    }
    check(r, command_name(cmd_start_user_recovery), dev_id);
}

void control::end_user_recovery(std::uint32_t dev_id, pid_t pid)
{
    check(command(cmd_end_user_recovery, dev_id, 0, 0, static_cast<std::uint64_t>(pid)),
          command_name(cmd_end_user_recovery), dev_id);
}

}  // namespace rct::daemon::ublk
