// The ublk kernel interface, as far as rctd uses it.
//
// Debian 12's <linux/ublk_cmd.h> is the 6.1 UAPI: legacy opcodes, feature
// bits 0-4 and the basic/discard parameters. The structs have not changed
// size since, so we take them from there and define the newer constants
// (ioctl-encoded opcodes, GET_FEATURES, later feature bits) ourselves, with
// the values of the kernel's UAPI header.
#pragma once

#include <linux/ublk_cmd.h>
#include <sys/ioctl.h>

#include <cstdint>

namespace rct::daemon::ublk {

// Control commands (on /dev/ublk-control), legacy numbers.
inline constexpr unsigned cmd_get_dev_info = UBLK_CMD_GET_DEV_INFO;
inline constexpr unsigned cmd_add_dev = UBLK_CMD_ADD_DEV;
inline constexpr unsigned cmd_del_dev = UBLK_CMD_DEL_DEV;
inline constexpr unsigned cmd_start_dev = UBLK_CMD_START_DEV;
inline constexpr unsigned cmd_stop_dev = UBLK_CMD_STOP_DEV;
inline constexpr unsigned cmd_set_params = UBLK_CMD_SET_PARAMS;
inline constexpr unsigned cmd_start_user_recovery = UBLK_CMD_START_USER_RECOVERY;
inline constexpr unsigned cmd_end_user_recovery = UBLK_CMD_END_USER_RECOVERY;
inline constexpr unsigned cmd_get_features = 0x13;  // 6.5+, ioctl-encoded only
inline constexpr unsigned cmd_del_dev_async = 0x14;  // 6.9+, ioctl-encoded only

// I/O commands (on /dev/ublkcN), legacy numbers.
inline constexpr unsigned io_fetch_req = UBLK_IO_FETCH_REQ;
inline constexpr unsigned io_commit_and_fetch_req = UBLK_IO_COMMIT_AND_FETCH_REQ;

// Since 6.4 the opcodes are ioctl-encoded; the legacy numbers stay accepted
// where CONFIG_BLKDEV_UBLK_LEGACY_OPCODES is set, and are all 6.1-6.3 know.
constexpr unsigned ctrl_ioctl(unsigned nr) { return _IOWR('u', nr, struct ublksrv_ctrl_cmd); }
constexpr unsigned io_ioctl(unsigned nr) { return _IOWR('u', nr, struct ublksrv_io_cmd); }
inline constexpr unsigned u_cmd_get_features = _IOR('u', cmd_get_features, struct ublksrv_ctrl_cmd);
inline constexpr unsigned u_cmd_del_dev_async = _IOR('u', cmd_del_dev_async, struct ublksrv_ctrl_cmd);

// Feature bits beyond the 6.1 header.
inline constexpr std::uint64_t f_user_recovery = UBLK_F_USER_RECOVERY;
inline constexpr std::uint64_t f_user_recovery_reissue = UBLK_F_USER_RECOVERY_REISSUE;
inline constexpr std::uint64_t f_cmd_ioctl_encode = 1ULL << 6;

// Device states (dev_info.state).
inline constexpr std::uint16_t state_dead = UBLK_S_DEV_DEAD;
inline constexpr std::uint16_t state_live = UBLK_S_DEV_LIVE;
inline constexpr std::uint16_t state_quiesced = UBLK_S_DEV_QUIESCED;

// Where queue q's descriptor array sits in the char device's mmap space:
// each queue has room for the largest depth, page-rounded.
constexpr std::uint64_t descriptor_offset(unsigned q, std::uint64_t page)
{
    const std::uint64_t per_queue = UBLK_MAX_QUEUE_DEPTH * sizeof(ublksrv_io_desc);
    return q * ((per_queue + page - 1) / page * page);
}

static_assert(sizeof(ublksrv_ctrl_cmd) == 32);
static_assert(sizeof(ublksrv_ctrl_dev_info) == 64);
static_assert(sizeof(ublksrv_io_cmd) == 16);
static_assert(sizeof(ublksrv_io_desc) == 24);

}  // namespace rct::daemon::ublk
