// Transmission phase: request parsing, dispatch, replies.
#include "connection.hh"

#include "../worker.hh"

#include <rct/io_stats.hh>
#include <rct/log.hh>

#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <algorithm>
#include <optional>
#include <cstring>

namespace rct::daemon {
namespace {

constexpr std::size_t recv_buffer_size = 256 * 1024;
// Compact the receive buffer once less than this is free at its end.
constexpr std::size_t recv_low_water = 64 * 1024;
// Reads at least this large first ask the backend whether they hit a hole.
constexpr std::uint32_t hole_check_min = 64 * 1024;
// Extent descriptors in one BLOCK_STATUS reply, shared by its contexts (a
// context gets at least one), so the reply's size does not grow with them.
constexpr std::size_t max_descriptors = 32 * 1024;

}  // namespace

connection::connection(worker& w, unique_fd sock, std::string peer, admission::ticket slot)
    : worker_(w), sock_(std::move(sock)), peer_(std::move(peer)), slot_(std::move(slot)),
      accepted_(std::chrono::steady_clock::now()), cred_(peer_of_socket(sock_.get())),
      tls_mode_(worker_.tls() == nullptr ? tls_mode::off
                : cred_                    ? worker_.config().tls.unix_socket
                                           : worker_.config().tls.tcp)
{
    in_.data.resize(recv_buffer_size);
}

connection::connection(worker& w, unique_fd sock, nbd::session_state st, nbd_export e, admission::ticket slot)
    : connection(w, std::move(sock), std::move(st.peer), std::move(slot))
{
    resumed_ = true;
    phase_ = st.at;
    neg_ = std::move(st.neg);
    drain_opt_ = st.drain_opt;
    drain_left_ = st.drain_left;
    in_.data.resize(std::max(recv_buffer_size, st.input.size() + recv_low_water));
    std::copy(st.input.begin(), st.input.end(), in_.data.begin());
    in_.end = st.input.size();
    carried_out_ = std::move(st.output);
    export_ = std::move(e);
}

connection::~connection()
{
    if (attached_) {
        export_.d->detach_client(sock_.get());
    }
}

void connection::start()
{
    reading_ = true;
    if (!resumed_) {
        log::debug("{}: connected", peer_);
        handshake(true);
        return;
    }
    if (!carried_out_.empty()) {
        // The reply bytes the previous rctd had not sent go out first.
        request& rq = *take_request();
        rq.buf = carried_out_.data();
        rq.buf_size = 0;
        rq.charge = 0;
        rq.hdr_len = 0;
        rq.data_len = carried_out_.size();
        enqueue(rq);
    }
    if (phase_ == nbd::phase::transmission) {
        begin_transmission();
    } else {
        handshake(false);
    }
}

void connection::freeze() noexcept
{
    if (freezing_ || closing()) {
        return;
    }
    if (tls_) {
        // A TLS session's keys live in this process's tunnel and cannot
        // move to the next rctd: the client reconnects.
        log::info("{}: a TLS connection cannot be handed to the new rctd; closing it", peer_);
        cut_off();
        return;
    }
    freezing_ = true;
    if (pending_recv_ != nullptr) {
        io_uring_prep_cancel(worker_.ring().sqe(nullptr), pending_recv_, 0);
    }
    if (budget_wait_ != nullptr) {
        worker_.budget().cancel(budget_waiter_);
        wake_reader();
    }
    if (slot_free_.waiting()) {
        slot_free_.wake();
    }
}

void connection::force_freeze() noexcept
{
    if (!freezing_ || frozen_ || closing()) {
        return;
    }
    send_stopped_ = true;
    if (sending_) {
        io_uring_prep_cancel(worker_.ring().sqe(nullptr), &sender_, 0);
    } else {
        maybe_frozen();
    }
}

void connection::park() noexcept
{
    parked_ = true;
    maybe_frozen();
}

bool connection::parked_by_freeze(long r) const noexcept
{
    // A receive cut_off() cancelled ends the connection like any failed
    // one; only a freeze parks it.
    return r == -ECANCELED && freezing_ && !cut_off_;
}

void connection::maybe_frozen() noexcept
{
    if (freezing_ && parked_ && !sending_ && !broken_ && queued_ == inflight_ &&
        (send_head_ == nullptr || send_stopped_)) {
        frozen_ = true;
    }
}

std::pair<nbd::session_state, unique_fd> connection::take_state()
{
    nbd::session_state st;
    st.at = transmitting_ ? nbd::phase::transmission : phase_;
    st.neg = std::move(neg_);
    st.export_name = transmitting_ ? export_.name() : std::string();
    st.peer = peer_;
    st.drain_opt = drain_opt_;
    st.drain_left = drain_left_;
    st.input.assign(in_.head(), in_.head() + in_.size());
    std::size_t skip = head_sent_;
    while (send_head_ != nullptr) {
        request* rq = send_head_;
        const std::size_t hdr_skip = std::min<std::size_t>(skip, rq->hdr_len);
        st.output.insert(st.output.end(), rq->hdr.data() + hdr_skip, rq->hdr.data() + rq->hdr_len);
        skip -= hdr_skip;
        if (rq->data_len > skip) {
            st.output.insert(st.output.end(), rq->buf + skip, rq->buf + rq->data_len);
        }
        skip = 0;
        send_head_ = rq->next;
        --queued_;
        release(*rq);
    }
    send_tail_ = nullptr;
    head_sent_ = 0;
    if (attached_) {
        export_.d->detach_client(sock_.get());
        attached_ = false;
    }
    retired_ = true;
    return {std::move(st), std::move(sock_)};
}

void connection::stop() noexcept
{
    stopping_ = true;
    // Wakes a pending recv with end-of-file; the reader then winds down.
    ::shutdown(sock_.get(), SHUT_RD);
    // A reader waiting for memory is not in a recv: wake it directly.
    if (budget_wait_ != nullptr) {
        worker_.budget().cancel(budget_waiter_);
        wake_reader();
    }
}

void connection::cut_off() noexcept
{
    if (cut_off_ || retired_) {
        return;
    }
    cut_off_ = true;
    broken_ = true;  // replies still to come are dropped
    if (parked_) {
        // Its reader has already ended (a freeze given up on).
        parked_ = false;
        reading_ = false;
    }
    stop();          // also wakes a reader waiting for memory
    ::shutdown(sock_.get(), SHUT_WR);
    // A send into a full buffer or a recv may not wake for the shutdown
    // alone; cancelling every operation on the socket ends them for sure.
    io_uring_prep_cancel_fd(worker_.ring().sqe(nullptr), sock_.get(), IORING_ASYNC_CANCEL_ALL);
    if (!sending_) {
        // Replies queued behind sends a freeze stopped have no send left
        // to drop them.
        drop_send_queue();
    }
    maybe_finish();
}

void connection::check_deadlines(std::chrono::steady_clock::time_point now) noexcept
{
    using std::chrono::seconds;
    const daemon_config& cfg = worker_.config();
    if (cut_off_ || retired_ || freezing_) {
        return;
    }
    if (!transmitting_) {
        if (cfg.handshake_timeout != 0 && now - accepted_ >= seconds(cfg.handshake_timeout)) {
            RCT_LOG_LIMITED(log::level::info, "{}: no export chosen within --handshake-timeout {} s; closing", peer_,
                            cfg.handshake_timeout);
            cut_off();
        }
        return;
    }
    if (send_stalled(now)) {
        RCT_LOG_LIMITED(log::level::warning, "{}: read none of its replies for --send-timeout {} s; disconnecting",
                        peer_, cfg.send_timeout);
        cut_off();
    } else if (idle(now)) {
        RCT_LOG_LIMITED(log::level::info, "{}: idle for --idle-timeout {} s; closing", peer_, cfg.idle_timeout);
        cut_off();
    }
}

bool connection::send_stalled(std::chrono::steady_clock::time_point now) noexcept
{
    // The kernel retries a MSG_WAITALL sendmsg itself, so a large reply shows
    // progress only as change in the socket's unsent bytes.
    int unsent = -1;
    if (sending_) {
        ::ioctl(sock_.get(), SIOCOUTQ, &unsent);
    }
    if (!sending_ || sends_ != seen_.sends || unsent != seen_.unsent) {
        seen_.sends = sends_;
        seen_.unsent = unsent;
        seen_.sent = now;
        return false;
    }
    const unsigned limit = worker_.config().send_timeout;
    return limit != 0 && now - seen_.sent >= std::chrono::seconds(limit);
}

bool connection::idle(std::chrono::steady_clock::time_point now) noexcept
{
    // A request waiting for memory is not idleness: it was counted before
    // its wait, and cutting it off would drop it unanswered.
    if (requests_ != seen_.requests || inflight_ != 0 || sending_ || budget_waiter_.queued()) {
        seen_.requests = requests_;
        seen_.active = now;
        return false;
    }
    const unsigned limit = worker_.config().idle_timeout;
    return limit != 0 && now - seen_.active >= std::chrono::seconds(limit);
}

void connection::end_handshake() noexcept
{
    reading_ = false;
    maybe_finish();
}

void connection::begin_transmission() noexcept
{
    export_.d->attach_client(sock_.get());
    attached_ = true;
    transmitting_ = true;
    seen_.active = seen_.sent = std::chrono::steady_clock::now();
    log::debug("{}: serving '{}' (structured replies {}, {} meta contexts)", peer_, export_.name(),
               neg_.structured ? "on" : "off", neg_.meta.size());
    reader();
}

void connection::maybe_finish() noexcept
{
    if (parked_ && !cut_off_) {
        maybe_frozen();
        return;
    }
    if (reading_ || inflight_ != 0 || sending_ || retired_) {
        return;
    }
    retired_ = true;
    log::debug("{}: closed", peer_);
    worker_.retire(this);
}

connection::request* connection::take_request() noexcept
{
    request* rq = free_;
    if (rq != nullptr) {
        free_ = rq->next;
    } else {
        all_requests_.push_back(std::make_unique<request>());
        rq = all_requests_.back().get();
        rq->conn = this;
    }
    rq->next = nullptr;
    ++inflight_;
    return rq;
}

void connection::release(request& rq) noexcept
{
    if (rq.buf_size != 0) {
        worker_.buffers().put(rq.buf, rq.buf_size);
        rq.buf_size = 0;
    }
    rq.buf = nullptr;
    if (rq.charge != 0) {
        held_ -= rq.charge;
        worker_.budget().give(rq.charge);
        rq.charge = 0;
        if (budget_wait_ != nullptr && !budget_waiter_.queued() &&
            held_ + wanted_ <= worker_.config().connection_memory) {
            wake_reader();
        }
    }
    rq.next = free_;
    free_ = &rq;
    --inflight_;
}

std::size_t connection::charge_of(const nbd::request_header& h) const noexcept
{
    const bool payload = h.type == nbd::cmd_write || h.type == nbd::cmd_read;
    if (payload && h.length != 0 && h.length <= worker_.config().max_payload) {
        return buffer_pool::rounded(h.length);
    }
    if (h.type == nbd::cmd_block_status && !neg_.meta.empty()) {
        // The largest reply block_status() can build.
        const std::size_t n = neg_.meta.size();
        return buffer_pool::rounded(n * (nbd::chunk_header_size + 4) + 8 * std::max(n, max_descriptors));
    }
    return 0;
}

bool connection::reserve(std::size_t bytes) noexcept
{
    if (granted_ != 0) {
        granted_ = 0;
        return true;
    }
    if (budget_waiter_.queued()) {
        return false;
    }
    wanted_ = bytes;
    if (held_ + bytes > worker_.config().connection_memory) {
        // Our own replies have to leave first: the client is not reading them.
        log::debug("{}: holds {} bytes of unsent replies; not reading until they leave", peer_, held_);
        return false;
    }
    if (worker_.budget().try_take(bytes)) {
        return true;
    }
    log::debug("{}: worker memory budget spent ({} of {} bytes); waiting", peer_, worker_.budget().used(),
               worker_.budget().limit());
    worker_.budget().enqueue(budget_waiter_, bytes);
    return false;
}

void connection::drop_grant() noexcept
{
    worker_.budget().cancel(budget_waiter_);
    if (granted_ != 0) {
        worker_.budget().give(granted_);
        granted_ = 0;
    }
}

void connection::wake_reader() noexcept
{
    // Through the ring, not a direct resume: the caller may be deep in a
    // send completion or another connection's release.
    if (budget_wait_ != nullptr && !wake_posted_) {
        io_uring_prep_nop(worker_.ring().sqe(budget_wait_));
        wake_posted_ = true;
    }
}

void connection::budget_waiter::admitted() noexcept
{
    c_.granted_ = c_.wanted_;
    c_.wake_reader();
}

// A request object for h holding `charge` bytes of the budget, with its
// payload buffer when it needs one (left null when the pool has none).
connection::request& connection::begin_request(const nbd::request_header& h, std::size_t charge,
                                               bool needs_buffer) noexcept
{
    request& rq = *take_request();
    rq.charge = charge;
    held_ += charge;
    rq.cookie = h.cookie;
    rq.type = h.type;
    rq.cmd_flags = h.flags;
    rq.offset = h.offset;
    rq.length = h.length;
    rq.hdr_len = 0;
    rq.data_len = 0;
    if (needs_buffer) {
        rq.buf = worker_.buffers().get(h.length);
        rq.buf_size = rq.buf ? h.length : 0;
    }
    return rq;
}

// Dispatches a complete request, or answers it with the error that stops it.
void connection::answer(const nbd::request_header& h, request& rq, bool needs_buffer) noexcept
{
    const nbd::session_view view{export_.size(), worker_.config().max_payload, export_.read_only(), neg_.structured,
                                 !neg_.meta.empty()};
    std::uint32_t err = nbd::validate_request(h, view);
    if (err == 0 && needs_buffer && rq.buf == nullptr) {
        err = nbd::err_nomem;
    }
    if (err == 0 && (stopping_ || export_.d->removed())) {
        err = nbd::err_shutdown;
    }
    count_start(rq);
    if (err != 0) {
        log::debug("{}: request type {} off {} len {} flags {:#x} refused: error {}", peer_, h.type, h.offset,
                   h.length, h.flags, err);
        reply_error(rq, err);
    } else {
        dispatch(h, rq);
    }
}

namespace {

std::optional<stat_op> stat_of_command(std::uint16_t type) noexcept
{
    switch (type) {
    case nbd::cmd_read: return stat_op::read;
    case nbd::cmd_write: return stat_op::write;
    case nbd::cmd_flush: return stat_op::flush;
    case nbd::cmd_trim: return stat_op::trim;
    case nbd::cmd_write_zeroes: return stat_op::write_zeroes;
    case nbd::cmd_cache: return stat_op::cache;
    case nbd::cmd_block_status: return stat_op::block_status;
    default: return std::nullopt;
    }
}

}  // namespace

void connection::count_start(request& rq) noexcept
{
    rq.failed = false;
    rq.started_ns = 0;
    if (stat_of_command(rq.type)) {
        rq.started_ns = stat_clock_ns();
        export_.d->stats().begin();
    }
}

void connection::count_end(request& rq) noexcept
{
    if (rq.started_ns == 0) {
        return;
    }
    const stat_op op = *stat_of_command(rq.type);
    const bool moves = op != stat_op::flush && op != stat_op::block_status && op != stat_op::cache;
    export_.d->stats().record(op, moves && !rq.failed ? rq.length : 0, rq.failed, stat_clock_ns() - rq.started_ns);
    rq.started_ns = 0;
}

detached connection::reader()
{
    io_ring& ring = worker_.ring();
    const int fd = sock_.get();
    const daemon_config& cfg = worker_.config();

    // After stop() the kernel still hands over what the client had sent;
    // those requests get NBD_ESHUTDOWN, as the protocol asks of a server
    // shutting down. Only cut_off() ends the loop early, and freeze() parks
    // it at its next wait (live upgrade).
    while (!cut_off_) {
        if (freezing_) {
            co_return park();
        }
        if (in_.size() < nbd::request_size) {
            const long r = co_await fill_io(ring, fd, in_, nbd::request_size, recv_low_water, freezing_,
                                            &pending_recv_);
            if (parked_by_freeze(r)) {
                co_return park();
            }
            if (r < static_cast<long>(nbd::request_size)) {
                if (r < 0 && r != -ECONNRESET) {
                    log::debug("{}: receive failed: {}", peer_, std::strerror(static_cast<int>(-r)));
                }
                break;
            }
        }

        nbd::request_header h;
        if (!nbd::decode_request(in_.head(), h)) {
            log::warn("{}: bad request magic; closing the connection", peer_);
            break;
        }
        in_.consume(nbd::request_size);
        ++requests_;

        if (nbd::frame_request(h) == nbd::framing::disconnect) {
            log::debug("{}: client disconnected cleanly", peer_);
            break;
        }

        // Until the request's memory is ours, its payload stays in the socket.
        // A stopping reader only answers NBD_ESHUTDOWN, which needs none.
        std::size_t charge = stopping_ ? 0 : charge_of(h);
        bool reserved = charge == 0;
        while (!reserved && !stopping_ && !freezing_) {
            reserved = reserve(charge);
            if (!reserved && granted_ == 0) {
                ring_wait w;
                budget_wait_ = &w;
                co_await w;
                budget_wait_ = nullptr;
                wake_posted_ = false;
            }
        }
        if (!reserved && freezing_ && !stopping_) {
            // Not started: the header goes back to the unparsed input.
            drop_grant();
            in_.begin -= nbd::request_size;
            --requests_;
            co_return park();
        }
        if (!reserved) {
            drop_grant();
            charge = 0;
        }
        const bool refusing = stopping_ && charge == 0;

        const bool needs_buffer = (h.type == nbd::cmd_write || h.type == nbd::cmd_read) && h.length != 0 &&
                                  h.length <= cfg.max_payload && !refusing;
        request& rq = begin_request(h, charge, needs_buffer);

        if (h.type == nbd::cmd_write && h.length != 0) {
            const int r = co_await receive_payload(h, rq);
            if (r == -ECANCELED && freezing_ && !cut_off_) {
                co_return park();  // rq went back into the unparsed input
            }
            if (r <= 0) {
                release(rq);
                break;
            }
        }

        answer(h, rq, needs_buffer);

        if (inflight_ >= cfg.max_inflight) {
            co_await slot_free_;
        }
    }
    reading_ = false;
    maybe_finish();
}

// A WRITE's payload: what is already buffered, then the rest straight into
// the request's buffer (or through the receive buffer into nothing, when
// there is none). Resumes with 1, 0 at end of file or -errno; -ECANCELED
// when a freeze stopped it, the header and the payload so far then back in
// the unparsed input and rq released.
task<int> connection::receive_payload(const nbd::request_header& h, request& rq)
{
    io_ring& ring = worker_.ring();
    const int fd = sock_.get();
    const std::size_t header_at = in_.begin - nbd::request_size;
    const std::size_t have = std::min<std::size_t>(in_.size(), h.length);
    if (rq.buf != nullptr) {
        std::memcpy(rq.buf, in_.head(), have);
    }
    in_.consume(have);
    if (have == h.length) {
        co_return 1;
    }
    if (rq.buf == nullptr) {
        // Too long or out of memory: drain the payload, then fail the
        // request. Not frozen midway (a freeze waits for it or gives up).
        std::size_t left = h.length - have;
        long r = 1;
        in_.begin = in_.end = 0;
        while (left > 0 && r > 0) {
            const std::size_t n = std::min(left, in_.data.size());
            r = co_await exact_io(ring, fd, exact_io::dir::recv, in_.data.data(), n);
            left -= r > 0 ? static_cast<std::size_t>(r) : 0;
        }
        co_return r > 0 ? 1 : static_cast<int>(r);
    }
    exact_io io(ring, fd, exact_io::dir::recv, rq.buf + have, h.length - have, &freezing_);
    pending_recv_ = &io;
    const long r = co_await io;
    pending_recv_ = nullptr;
    if (r == static_cast<long>(h.length - have)) {
        co_return 1;
    }
    if (!freezing_ || cut_off_ || (r < 0 && r != -ECANCELED)) {
        co_return r <= 0 ? static_cast<int>(r) : -EIO;
    }
    // The receive buffer still holds the header and the first `have` bytes
    // where they were (nothing was received into it since); what came
    // after goes back behind them.
    const std::size_t got = io.done();
    in_.begin = header_at;
    in_.end = header_at + nbd::request_size + have;
    in_.make_room(got);
    std::memcpy(in_.data.data() + in_.end, rq.buf + have, got);
    in_.end += got;
    --requests_;
    release(rq);
    co_return -ECANCELED;
}

void connection::dispatch(const nbd::request_header& h, request& rq) noexcept
{
    backend& store = export_.io();
    rq.flags = (h.flags & nbd::cmd_flag_fua) ? io_fua : 0;
    switch (h.type) {
    case nbd::cmd_read:
        if (h.length == 0) {
            on_done(rq, 0);
            return;
        }
        if (neg_.structured && h.length >= hole_check_min && store.is_hole(h.offset, h.length)) {
            std::byte* p = rq.hdr.data();
            p = nbd::store_be<std::uint32_t>(p, nbd::structured_reply_magic);
            p = nbd::store_be<std::uint16_t>(p, nbd::reply_flag_done);
            p = nbd::store_be<std::uint16_t>(p, nbd::chunk_offset_hole);
            p = nbd::store_be<std::uint64_t>(p, rq.cookie);
            p = nbd::store_be<std::uint32_t>(p, 12);
            p = nbd::store_be<std::uint64_t>(p, h.offset);
            nbd::store_be<std::uint32_t>(p, h.length);
            rq.hdr_len = 32;
            enqueue(rq);
            return;
        }
        rq.op = io_op::read;
        break;
    case nbd::cmd_write:
        if (h.length == 0) {
            on_done(rq, 0);
            return;
        }
        rq.op = io_op::write;
        break;
    case nbd::cmd_flush:
        rq.op = io_op::flush;
        break;
    case nbd::cmd_trim:
        rq.op = io_op::trim;
        break;
    case nbd::cmd_cache:
        rq.op = io_op::cache;
        break;
    case nbd::cmd_write_zeroes:
        rq.op = io_op::write_zeroes;
        if (!(h.flags & nbd::cmd_flag_no_hole)) {
            rq.flags |= io_may_trim;
        }
        if (h.flags & nbd::cmd_flag_fast_zero) {
            rq.flags |= io_fast_zero;
        }
        break;
    case nbd::cmd_block_status:
        block_status(rq, h.offset, h.length);
        return;
    default:
        reply_error(rq, nbd::err_inval);
        return;
    }
    if (h.length == 0 && h.type != nbd::cmd_flush) {
        on_done(rq, 0);
        return;
    }
    store.submit(worker_.ring(), rq);
}

void connection::block_status(request& rq, std::uint64_t offset, std::uint32_t length) noexcept
{
    if (length == 0) {
        reply_error(rq, nbd::err_inval);
        return;
    }
    const bool one = (rq.cmd_flags & nbd::cmd_flag_req_one) != 0;
    const std::size_t max = one ? 1 : std::max<std::size_t>(1, max_descriptors / neg_.meta.size());
    // One chunk per selected context, each with its own extent list; the
    // lists sit back to back in extents_.
    extents_.clear();
    extent_counts_.clear();
    int r = 0;
    try {
        for (const nbd::meta_context& m : neg_.meta) {
            const std::size_t before = extents_.size();
            if (m.kind == nbd::meta_kind::base_allocation) {
                r = export_.io().allocation(offset, length, max, extents_);
            } else if (const tracker* t = export_.d->tracking()) {
                // -ESTALE (reset, or the checkpoint deleted) goes out as EIO.
                r = t->dirty_map(m.generation, m.epoch, export_.until_epoch(), offset, length, max, extents_);
            } else {
                r = -EINVAL;
            }
            if (r < 0 || extents_.size() == before) {
                r = r < 0 ? r : -EIO;
                break;
            }
            if (one) {
                extents_.resize(before + 1);
                extents_[before].length = std::min<std::uint64_t>(extents_[before].length, length);
            }
            extent_counts_.push_back(extents_.size() - before);
        }
    } catch (const std::bad_alloc&) {
        r = -ENOMEM;
    }
    if (r < 0) {
        reply_error(rq, nbd::error_from_errno(r));
        return;
    }
    const std::size_t total = neg_.meta.size() * (nbd::chunk_header_size + 4) + 8 * extents_.size();
    rq.buf = worker_.buffers().get(total);
    if (rq.buf == nullptr) {
        reply_error(rq, nbd::err_nomem);
        return;
    }
    rq.buf_size = total;
    std::byte* p = rq.buf;
    std::size_t next = 0;
    for (std::size_t i = 0; i < neg_.meta.size(); ++i) {
        const std::size_t n = extent_counts_[i];
        p = nbd::store_be<std::uint32_t>(p, nbd::structured_reply_magic);
        p = nbd::store_be<std::uint16_t>(p, i + 1 == neg_.meta.size() ? nbd::reply_flag_done : 0);
        p = nbd::store_be<std::uint16_t>(p, nbd::chunk_block_status);
        p = nbd::store_be<std::uint64_t>(p, rq.cookie);
        p = nbd::store_be<std::uint32_t>(p, static_cast<std::uint32_t>(4 + 8 * n));
        p = nbd::store_be<std::uint32_t>(p, neg_.meta[i].id);
        for (std::size_t k = 0; k < n; ++k, ++next) {
            p = nbd::store_be<std::uint32_t>(p, static_cast<std::uint32_t>(extents_[next].length));
            p = nbd::store_be<std::uint32_t>(p, extents_[next].flags);
        }
    }
    rq.data_len = total;
    enqueue(rq);
}

void connection::on_done(request& rq, int res) noexcept
{
    if (res < 0) {
        log::debug("{}: request type {} off {} len {} failed: {}", peer_, rq.type, rq.offset, rq.length,
                   std::strerror(-res));
        reply_error(rq, nbd::error_from_errno(res));
        return;
    }
    std::byte* p = rq.hdr.data();
    if (rq.type == nbd::cmd_read && neg_.structured) {
        p = nbd::store_be<std::uint32_t>(p, nbd::structured_reply_magic);
        p = nbd::store_be<std::uint16_t>(p, nbd::reply_flag_done);
        if (rq.length == 0) {
            p = nbd::store_be<std::uint16_t>(p, nbd::chunk_none);
            p = nbd::store_be<std::uint64_t>(p, rq.cookie);
            nbd::store_be<std::uint32_t>(p, 0);
            rq.hdr_len = nbd::chunk_header_size;
        } else {
            p = nbd::store_be<std::uint16_t>(p, nbd::chunk_offset_data);
            p = nbd::store_be<std::uint64_t>(p, rq.cookie);
            p = nbd::store_be<std::uint32_t>(p, static_cast<std::uint32_t>(8 + rq.length));
            nbd::store_be<std::uint64_t>(p, rq.offset);
            rq.hdr_len = nbd::chunk_header_size + 8;
            rq.data_len = rq.length;
        }
    } else {
        p = nbd::store_be<std::uint32_t>(p, nbd::simple_reply_magic);
        p = nbd::store_be<std::uint32_t>(p, 0);
        nbd::store_be<std::uint64_t>(p, rq.cookie);
        rq.hdr_len = nbd::simple_reply_size;
        if (rq.type == nbd::cmd_read) {
            rq.data_len = rq.length;
        }
    }
    enqueue(rq);
}

void connection::reply_error(request& rq, std::uint32_t nbd_error) noexcept
{
    rq.failed = true;
    std::byte* p = rq.hdr.data();
    rq.data_len = 0;
    if (neg_.structured && (rq.type == nbd::cmd_read || rq.type == nbd::cmd_block_status)) {
        p = nbd::store_be<std::uint32_t>(p, nbd::structured_reply_magic);
        p = nbd::store_be<std::uint16_t>(p, nbd::reply_flag_done);
        p = nbd::store_be<std::uint16_t>(p, nbd::chunk_error);
        p = nbd::store_be<std::uint64_t>(p, rq.cookie);
        p = nbd::store_be<std::uint32_t>(p, 6);
        p = nbd::store_be<std::uint32_t>(p, nbd_error);
        nbd::store_be<std::uint16_t>(p, 0);
        rq.hdr_len = nbd::chunk_header_size + 6;
    } else {
        p = nbd::store_be<std::uint32_t>(p, nbd::simple_reply_magic);
        p = nbd::store_be<std::uint32_t>(p, nbd_error);
        nbd::store_be<std::uint64_t>(p, rq.cookie);
        rq.hdr_len = nbd::simple_reply_size;
    }
    enqueue(rq);
}

void connection::enqueue(request& rq) noexcept
{
    count_end(rq);
    if (broken_) {
        release(rq);
        if (slot_free_.waiting()) {
            slot_free_.wake();
        }
        maybe_finish();
        return;
    }
    rq.next = nullptr;
    if (send_tail_ != nullptr) {
        send_tail_->next = &rq;
    } else {
        send_head_ = &rq;
    }
    send_tail_ = &rq;
    ++queued_;
    send_more();
    if (send_stopped_) {
        maybe_frozen();  // a reply that finished after the sends stopped moves with the state
    }
}

void connection::drop_send_queue() noexcept
{
    while (send_head_ != nullptr) {
        request* rq = send_head_;
        send_head_ = rq->next;
        --queued_;
        release(*rq);
    }
    send_tail_ = nullptr;
    head_sent_ = 0;
}

void connection::send_more() noexcept
{
    if (sending_ || send_head_ == nullptr || send_stopped_) {
        return;
    }
    std::size_t n = 0;
    std::size_t skip = head_sent_;
    for (request* rq = send_head_; rq != nullptr && n + 2 <= iov_.size(); rq = rq->next) {
        std::size_t hdr_skip = std::min<std::size_t>(skip, rq->hdr_len);
        if (rq->hdr_len > hdr_skip) {
            iov_[n++] = {rq->hdr.data() + hdr_skip, rq->hdr_len - hdr_skip};
        }
        skip -= hdr_skip;
        if (rq->data_len > skip) {
            iov_[n++] = {rq->buf + skip, rq->data_len - skip};
        }
        skip = 0;
    }
    msg_ = {};
    msg_.msg_iov = iov_.data();
    msg_.msg_iovlen = n;
    sending_ = true;
    // MSG_WAITALL: the kernel retries a short send itself rather than
    // bouncing every partial transfer back through this loop.
    io_uring_prep_sendmsg(worker_.ring().sqe(&sender_), sock_.get(), &msg_, MSG_NOSIGNAL | MSG_WAITALL);
}

void connection::on_sent(int res) noexcept
{
    sending_ = false;
    ++sends_;
    if (res == -ECANCELED && send_stopped_ && !broken_) {
        res = 0;  // stopped for a freeze: the rest moves with the state
    }
    if (res < 0 || broken_) {
        if (res < 0 && res != -EPIPE && res != -ECONNRESET && res != -ECANCELED) {
            log::debug("{}: send failed: {}", peer_, std::strerror(-res));
        }
        broken_ = true;
        drop_send_queue();
    } else {
        std::size_t left = static_cast<std::size_t>(res);
        while (left > 0 && send_head_ != nullptr) {
            request* rq = send_head_;
            const std::size_t remaining = rq->hdr_len + rq->data_len - head_sent_;
            if (left < remaining) {
                head_sent_ += left;
                break;
            }
            left -= remaining;
            head_sent_ = 0;
            send_head_ = rq->next;
            if (send_head_ == nullptr) {
                send_tail_ = nullptr;
            }
            --queued_;
            release(*rq);
        }
        send_more();
    }
    if (slot_free_.waiting() && inflight_ < worker_.config().max_inflight) {
        slot_free_.wake();
    }
    maybe_finish();
}

}  // namespace rct::daemon
