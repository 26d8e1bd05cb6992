// The NBD handshake: fixed newstyle negotiation, up to GO or EXPORT_NAME.
//
// Options are handled in any order and any number of times; an unknown
// option gets NBD_REP_ERR_UNSUP and negotiation goes on. Option payloads are
// read whole into a bounded buffer (a longer one is drained and refused with
// ERR_TOO_BIG), so a hostile client can neither desynchronise nor exhaust us.
// META_CONTEXT options cost O(queries + checkpoints) and are capped
// (options.hh); their replies leave in one send.
#include "connection.hh"
#include "options.hh"

#include "../worker.hh"

#include <rct/log.hh>

#include <algorithm>
#include <cstring>

namespace rct::daemon {
namespace {

constexpr std::uint32_t max_option_len = 64 * 1024;
// Receive at least this much at a time while haggling.
constexpr std::size_t option_header_size_chunk = 4096;

// Appends an option reply header for len bytes of payload to out; returns
// where the payload goes.
std::byte* append_reply(std::vector<std::byte>& out, std::uint32_t opt, std::uint32_t type, std::size_t len)
{
    const std::size_t at = out.size();
    out.resize(at + 20 + len);
    std::byte* p = out.data() + at;
    p = nbd::store_be<std::uint64_t>(p, nbd::opt_reply_magic);
    p = nbd::store_be<std::uint32_t>(p, opt);
    p = nbd::store_be<std::uint32_t>(p, type);
    return nbd::store_be<std::uint32_t>(p, static_cast<std::uint32_t>(len));
}

}  // namespace

bool connection::may_open(std::string_view disk, std::string& why) const
{
    if (!worker_.config().access.may_open(cred_, disk)) {
        // Told as "no such export" would be, but saying why.
        why = "export " + std::string(disk) + " is not available to this client (--export-group)";
        return false;
    }
    const std::string identity = tls_ ? tls_->identity() : std::string();
    if (!worker_.config().tls.may_open(disk, tls_ ? &identity : nullptr)) {
        why = "export " + std::string(disk) + " is not available to this client (--tls-export-identity)";
        return false;
    }
    return true;
}

nbd_export connection::lookup_export(std::string_view name, std::string& why) const
{
    auto& reg = worker_.registry();
    nbd_export e;
    if (!may_open(name.substr(0, name.find('@')), why)) {
        return {};
    }
    if (const auto at = name.find('@'); at != std::string_view::npos) {
        // DISK@SNAP: a snapshot, read-only.
        e.d = reg.find(name.substr(0, at));
        snapshot_store* s = e.d ? e.d->snapshots() : nullptr;
        if (s == nullptr) {
            why = "no such export: " + std::string(name);
            return {};
        }
        try {
            e.snap = s->view(std::string(name.substr(at + 1)));
        } catch (const std::exception& ex) {
            why = ex.what();
            return {};
        }
        return e;
    }
    if (!name.empty()) {
        e.d = reg.find(name);
    } else if (!worker_.config().default_export.empty()) {
        e.d = reg.find(worker_.config().default_export);
    } else if (auto all = reg.list(); all.size() == 1) {
        e.d = all.front();
    }
    if (!e.d) {
        why = name.empty() ? "no default export: name one of the disks" : "no such export: " + std::string(name);
    } else if (!may_open(e.d->name(), why)) {
        return {};
    } else if (e.d->restoring()) {
        why = "disk " + e.d->name() + " is being restored from a snapshot; try again when it is done";
        return {};
    }
    return e;
}

std::uint16_t connection::session_transmission_flags(const nbd_export& e) const noexcept
{
    std::uint16_t f = nbd::tf_has_flags | nbd::tf_send_flush | nbd::tf_send_cache | nbd::tf_can_multi_conn;
    if (e.read_only()) {
        f |= nbd::tf_read_only;
    } else {
        f |= nbd::tf_send_fua | nbd::tf_send_trim | nbd::tf_send_write_zeroes | nbd::tf_send_fast_zero;
    }
    if (neg_.structured) {
        f |= nbd::tf_send_df;
    }
    return f;
}

std::vector<checkpoint_info> connection::offered_checkpoints(const nbd_export& e) const
{
    std::vector<checkpoint_info> cps;
    if (const tracker* t = e.d->tracking()) {
        cps = t->checkpoints();
        if (const auto until = e.until_epoch()) {
            // A snapshot offers the bitmaps of the checkpoints before it.
            std::erase_if(cps, [&](const checkpoint_info& c) { return c.epoch >= *until; });
        }
    }
    return cps;
}

fill_io connection::fill(std::size_t need)
{
    return fill_io(worker_.ring(), sock_.get(), in_, need, option_header_size_chunk, freezing_, &pending_recv_);
}

exact_io connection::send_reply(std::uint32_t opt, std::uint32_t type, const void* payload, std::size_t len)
{
    out_.clear();
    std::byte* p = append_reply(out_, opt, type, len);
    if (len != 0) {
        std::memcpy(p, payload, len);
    }
    return exact_io(worker_.ring(), sock_.get(), exact_io::dir::send, out_.data(), out_.size());
}

// Every wait for input may end in a freeze (live upgrade): the handshake
// then parks where it stands, its unparsed bytes staying in in_.
detached connection::handshake(bool greet)
{
    step s = co_await greeting(greet);
    while (s == step::next) {
        s = drain_left_ != 0 ? co_await drain_option() : co_await next_option();
    }
    switch (s) {
    case step::transmit:
        co_return begin_transmission();
    case step::park:
        co_return park();
    default:
        co_return end_handshake();
    }
}

task<connection::step> connection::greeting(bool greet)
{
    if (greet) {
        std::array<std::byte, 18> g{};
        std::byte* p = nbd::store_be<std::uint64_t>(g.data(), nbd::nbdmagic);
        p = nbd::store_be<std::uint64_t>(p, nbd::ihaveopt);
        nbd::store_be<std::uint16_t>(p, nbd::flag_fixed_newstyle | nbd::flag_no_zeroes);
        if (co_await exact_io(worker_.ring(), sock_.get(), exact_io::dir::send, g.data(), g.size()) != 18) {
            co_return step::close;
        }
    }
    if (phase_ != nbd::phase::flags) {
        co_return step::next;
    }
    const long r = co_await fill(4);
    if (r < 4) {
        co_return parked_by_freeze(r) ? step::park : step::close;
    }
    const auto cflags = nbd::load_be<std::uint32_t>(in_.head());
    in_.consume(4);
    if (!nbd::valid_client_flags(cflags)) {
        log::warn("{}: unknown client flags {:#x}; closing", peer_, cflags);
        co_return step::close;
    }
    neg_.no_zeroes = (cflags & nbd::client_flag_no_zeroes) != 0;
    phase_ = nbd::phase::options;
    co_return step::next;
}

// An option longer than we take is read and thrown away in pieces, then
// refused.
task<connection::step> connection::drain_option()
{
    while (drain_left_ != 0) {
        if (freezing_) {
            co_return step::park;
        }
        if (in_.size() == 0) {
            const long r = co_await fill(1);
            if (r < 1) {
                co_return parked_by_freeze(r) ? step::park : step::close;
            }
        }
        const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(drain_left_, in_.size()));
        in_.consume(n);
        drain_left_ -= n;
    }
    const bool tls_first = tls_mode_ == tls_mode::require && !tls_;
    if (drain_opt_ == nbd::opt_export_name ||
        co_await send_reply(drain_opt_, tls_first ? nbd::rep_err_tls_reqd : nbd::rep_err_too_big, nullptr, 0) < 0) {
        co_return step::close;
    }
    co_return step::next;
}

task<connection::step> connection::next_option()
{
    if (stopping_) {
        co_return step::close;
    }
    if (freezing_) {
        co_return step::park;
    }
    long r = co_await fill(nbd::option_header_size);
    if (r < static_cast<long>(nbd::option_header_size)) {
        co_return parked_by_freeze(r) ? step::park : step::close;
    }
    const auto header = nbd::decode_option_header(in_.head());
    if (!header) {
        log::warn("{}: bad option magic; closing", peer_);
        co_return step::close;
    }
    const auto opt = header->opt;
    const auto len = header->len;
    if (len > max_option_len) {
        in_.consume(nbd::option_header_size);
        drain_opt_ = opt;
        drain_left_ = len;
        co_return step::next;
    }
    // The header stays unparsed until the whole option is in, so that a
    // freeze in between hands over the option whole.
    r = co_await fill(nbd::option_header_size + len);
    if (r < static_cast<long>(nbd::option_header_size + len)) {
        co_return parked_by_freeze(r) ? step::park : step::close;
    }
    std::vector<std::byte> data(in_.head() + nbd::option_header_size, in_.head() + nbd::option_header_size + len);
    in_.consume(nbd::option_header_size + len);
    log::debug("{}: option {} ({} bytes)", peer_, opt, len);
    if (tls_mode_ == tls_mode::require && !tls_ && opt != nbd::opt_starttls && opt != nbd::opt_abort) {
        // FORCEDTLS: nothing is said or chosen in the clear.
        if (opt == nbd::opt_export_name) {
            log::info("{}: EXPORT_NAME without TLS on a listener that requires it; closing", peer_);
            co_return step::close;
        }
        co_return co_await error_reply(opt, nbd::rep_err_tls_reqd, "TLS is required: send STARTTLS first");
    }

    switch (opt) {
    case nbd::opt_export_name:
        co_return co_await option_export_name(data);
    case nbd::opt_abort:
        co_await send_reply(opt, nbd::rep_ack, nullptr, 0);
        co_return step::close;
    case nbd::opt_list:
        co_return co_await option_list(len);
    case nbd::opt_structured_reply:
        if (len != 0) {
            co_return co_await error_reply(opt, nbd::rep_err_invalid, "STRUCTURED_REPLY takes no data");
        }
        neg_.structured = true;
        co_return co_await send_reply(opt, nbd::rep_ack, nullptr, 0) < 0 ? step::close : step::next;
    case nbd::opt_info:
    case nbd::opt_go:
        co_return co_await option_info_go(opt, data);
    case nbd::opt_list_meta_context:
    case nbd::opt_set_meta_context:
        co_return co_await option_meta_context(opt, data);
    case nbd::opt_starttls:
        co_return co_await option_starttls(len);
    default:
        co_return co_await error_reply(opt, nbd::rep_err_unsup, "option not supported");
    }
}

task<connection::step> connection::error_reply(std::uint32_t opt, std::uint32_t type, std::string_view msg)
{
    co_return co_await send_reply(opt, type, msg.data(), msg.size()) < 0 ? step::close : step::next;
}

task<connection::step> connection::option_export_name(std::vector<std::byte>& data)
{
    std::string name(reinterpret_cast<const char*>(data.data()), data.size());
    std::string why;
    export_ = lookup_export(name, why);
    if (!export_) {
        // This option has no way to report errors but a disconnect.
        log::info("{}: no export '{}'", peer_, name);
        co_return step::close;
    }
    out_.assign(10 + 124, std::byte{0});
    std::byte* p = nbd::store_be<std::uint64_t>(out_.data(), export_.size());
    nbd::store_be<std::uint16_t>(p, session_transmission_flags(export_));
    const std::size_t n = neg_.no_zeroes ? 10 : 134;
    if (co_await exact_io(worker_.ring(), sock_.get(), exact_io::dir::send, out_.data(), n) != static_cast<long>(n)) {
        co_return step::close;
    }
    neg_.meta.clear();  // EXPORT_NAME cannot carry a context selection
    co_return step::transmit;
}

task<connection::step> connection::option_list(std::uint32_t len)
{
    const std::uint32_t opt = nbd::opt_list;
    if (len != 0) {
        co_return co_await error_reply(opt, nbd::rep_err_invalid, "LIST takes no data");
    }
    std::vector<std::string> names;
    std::string why;
    for (const auto& d : worker_.registry().list()) {
        if (!may_open(d->name(), why)) {
            continue;
        }
        names.push_back(d->name());
        if (const snapshot_store* s = d->snapshots()) {
            for (const auto& snap : s->snapshots()) {
                if (snap.valid) {
                    names.push_back(d->name() + "@" + snap.checkpoint.name);
                }
            }
        }
    }
    for (const auto& n : names) {
        std::vector<std::byte> item(4 + n.size());
        nbd::store_be<std::uint32_t>(item.data(), static_cast<std::uint32_t>(n.size()));
        std::memcpy(item.data() + 4, n.data(), n.size());
        if (co_await send_reply(opt, nbd::rep_server, item.data(), item.size()) < 0) {
            co_return step::close;
        }
    }
    co_return co_await send_reply(opt, nbd::rep_ack, nullptr, 0) < 0 ? step::close : step::next;
}

task<connection::step> connection::option_info_go(std::uint32_t opt, std::vector<std::byte>& data)
{
    const auto req = nbd::parse_info_request(data);
    if (!req) {
        co_return co_await error_reply(opt, nbd::rep_err_invalid, "malformed INFO/GO request");
    }
    std::string why;
    auto d = lookup_export(req->name, why);
    if (!d) {
        co_return co_await error_reply(opt, nbd::rep_err_unknown, why);
    }
    std::array<std::byte, 16> info{};
    std::byte* p = nbd::store_be<std::uint16_t>(info.data(), nbd::info_export);
    p = nbd::store_be<std::uint64_t>(p, d.size());
    nbd::store_be<std::uint16_t>(p, session_transmission_flags(d));
    if (co_await send_reply(opt, nbd::rep_info, info.data(), 12) < 0) {
        co_return step::close;
    }
    p = nbd::store_be<std::uint16_t>(info.data(), nbd::info_block_size);
    p = nbd::store_be<std::uint32_t>(p, 1);
    p = nbd::store_be<std::uint32_t>(p, 4096);
    nbd::store_be<std::uint32_t>(p, worker_.config().max_payload);
    if (co_await send_reply(opt, nbd::rep_info, info.data(), 14) < 0) {
        co_return step::close;
    }
    if (req->want_name || req->want_description) {
        const std::string text = req->want_name ? d.name() : "rct disk " + d.name();
        std::vector<std::byte> item(2 + text.size());
        nbd::store_be<std::uint16_t>(item.data(), req->want_name ? nbd::info_name : nbd::info_description);
        std::memcpy(item.data() + 2, text.data(), text.size());
        if (co_await send_reply(opt, nbd::rep_info, item.data(), item.size()) < 0) {
            co_return step::close;
        }
    }
    if (co_await send_reply(opt, nbd::rep_ack, nullptr, 0) < 0) {
        co_return step::close;
    }
    if (opt != nbd::opt_go) {
        co_return step::next;
    }
    export_ = std::move(d);
    if (neg_.meta_export != req->name) {
        neg_.meta.clear();
    }
    co_return step::transmit;
}

task<connection::step> connection::option_meta_context(std::uint32_t opt, std::vector<std::byte>& data)
{
    const bool list = opt == nbd::opt_list_meta_context;
    if (!list) {
        neg_.meta.clear();  // replaced even if this SET fails
        neg_.meta_export.clear();
    }
    if (!neg_.structured) {
        co_return co_await error_reply(opt, nbd::rep_err_invalid, "negotiate structured replies first");
    }
    const auto req = nbd::parse_meta_context_request(data);
    if (!req) {
        co_return co_await error_reply(opt, nbd::rep_err_invalid, "malformed meta context request");
    }
    std::string why;
    auto target = lookup_export(req->name, why);
    if (!target) {
        co_return co_await error_reply(opt, nbd::rep_err_unknown, why);
    }
    auto matched = nbd::match_contexts(offered_checkpoints(target), req->queries, list);
    if (!matched) {
        co_return co_await error_reply(opt, nbd::rep_err_too_big, "too many meta context queries (at most 256)");
    }
    // Every context and the ACK in one send, however many there are.
    out_.clear();
    for (const auto& m : *matched) {
        std::byte* p = append_reply(out_, opt, nbd::rep_meta_context, 4 + m.name.size());
        p = nbd::store_be<std::uint32_t>(p, m.id);
        std::memcpy(p, m.name.data(), m.name.size());
    }
    append_reply(out_, opt, nbd::rep_ack, 0);
    if (!list) {
        neg_.meta = std::move(*matched);
        neg_.meta_export = req->name;
    }
    const long n = co_await exact_io(worker_.ring(), sock_.get(), exact_io::dir::send, out_.data(), out_.size());
    co_return n == static_cast<long>(out_.size()) ? step::next : step::close;
}

// After the ACK the client starts the TLS handshake on the socket, which
// the tunnel takes; negotiation goes on over the tunnel's plaintext end,
// with what was negotiated in the clear forgotten (the spec's rule).
task<connection::step> connection::option_starttls(std::uint32_t len)
{
    const std::uint32_t opt = nbd::opt_starttls;
    if (tls_mode_ == tls_mode::off) {
        co_return co_await error_reply(opt, nbd::rep_err_policy, "TLS is not offered on this listener");
    }
    if (tls_) {
        co_return co_await error_reply(opt, nbd::rep_err_invalid, "TLS is already on");
    }
    if (len != 0) {
        co_return co_await error_reply(opt, nbd::rep_err_invalid, "STARTTLS takes no data");
    }
    if (co_await send_reply(opt, nbd::rep_ack, nullptr, 0) < 0) {
        co_return step::close;
    }
    if (freezing_) {
        // A live upgrade began while the ACK was sent: the session about to
        // start could not move to the new rctd, so it does not start.
        co_return step::close;
    }
    const daemon_config& cfg = worker_.config();
    tls_server::started t;
    const int r = worker_.tls()->start(sock_, std::span(in_.head(), in_.size()), peer_,
                                       {cfg.handshake_timeout, cfg.send_timeout}, t);
    if (r < 0) {
        log::warn("{}: cannot start TLS: {}", peer_, std::strerror(-r));
        co_return step::close;
    }
    in_.consume(in_.size());
    sock_ = std::move(t.plain);
    tls_ = std::move(t.session);
    neg_.structured = false;
    neg_.meta.clear();
    neg_.meta_export.clear();
    co_return step::next;
}

}  // namespace rct::daemon
