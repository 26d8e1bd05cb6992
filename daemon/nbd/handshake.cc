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

nbd_export connection::lookup_export(std::string_view name, std::string& why) const
{
    auto& reg = worker_.registry();
    nbd_export e;
    if (!worker_.config().access.may_open(peer_of_socket(sock_.get()), name)) {
        // Told as "no such export" would be, but saying why.
        why = "export " + std::string(name) + " is not available to this client (--export-group)";
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
    } else if (!worker_.config().access.may_open(peer_of_socket(sock_.get()), e.d->name())) {
        why = "export " + e.d->name() + " is not available to this client (--export-group)";
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
    if (structured_) {
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

detached connection::handshake()
{
    io_ring& ring = worker_.ring();
    const int fd = sock_.get();
    std::array<std::byte, 32> small{};
    std::vector<std::byte> data;
    std::vector<std::byte> out;

    // Sends out as one option reply.
    auto reply = [&](std::uint32_t opt, std::uint32_t type, const std::byte* payload,
                     std::uint32_t len) -> exact_io {
        out.clear();
        std::byte* p = append_reply(out, opt, type, len);
        if (len != 0) {
            std::memcpy(p, payload, len);
        }
        return exact_io(ring, fd, exact_io::dir::send, out.data(), out.size());
    };

    {
        std::byte* p = small.data();
        p = nbd::store_be<std::uint64_t>(p, nbd::nbdmagic);
        p = nbd::store_be<std::uint64_t>(p, nbd::ihaveopt);
        nbd::store_be<std::uint16_t>(p, nbd::flag_fixed_newstyle | nbd::flag_no_zeroes);
        if (co_await exact_io(ring, fd, exact_io::dir::send, small.data(), 18) != 18) {
            co_return end_handshake();
        }
        if (co_await exact_io(ring, fd, exact_io::dir::recv, small.data(), 4) != 4) {
            co_return end_handshake();
        }
        const auto cflags = nbd::load_be<std::uint32_t>(small.data());
        if (!nbd::valid_client_flags(cflags)) {
            log::warn("{}: unknown client flags {:#x}; closing", peer_, cflags);
            co_return end_handshake();
        }
        no_zeroes_ = (cflags & nbd::client_flag_no_zeroes) != 0;
    }

    for (;;) {
        if (stopping_) {
            co_return end_handshake();
        }
        if (co_await exact_io(ring, fd, exact_io::dir::recv, small.data(), nbd::option_header_size) !=
            static_cast<long>(nbd::option_header_size)) {
            co_return end_handshake();
        }
        const auto header = nbd::decode_option_header(small.data());
        if (!header) {
            log::warn("{}: bad option magic; closing", peer_);
            co_return end_handshake();
        }
        const auto opt = header->opt;
        const auto len = header->len;

        if (len > max_option_len) {
            // Drain in bounded pieces, then refuse.
            data.resize(max_option_len);
            std::uint64_t left = len;
            bool ok = true;
            while (left > 0 && ok) {
                const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(left, data.size()));
                ok = co_await exact_io(ring, fd, exact_io::dir::recv, data.data(), n) == static_cast<long>(n);
                left -= n;
            }
            if (!ok || opt == nbd::opt_export_name) {
                co_return end_handshake();
            }
            if (co_await reply(opt, nbd::rep_err_too_big, nullptr, 0) < 0) {
                co_return end_handshake();
            }
            continue;
        }
        data.resize(len);
        if (len != 0 && co_await exact_io(ring, fd, exact_io::dir::recv, data.data(), len) != len) {
            co_return end_handshake();
        }
        log::debug("{}: option {} ({} bytes)", peer_, opt, len);

        auto error_reply = [&](std::uint32_t type, std::string_view msg) {
            return reply(opt, type, reinterpret_cast<const std::byte*>(msg.data()),
                         static_cast<std::uint32_t>(msg.size()));
        };

        switch (opt) {
        case nbd::opt_export_name: {
            std::string name(reinterpret_cast<const char*>(data.data()), data.size());
            std::string why;
            export_ = lookup_export(name, why);
            if (!export_) {
                // This option has no way to report errors but a disconnect.
                log::info("{}: no export '{}'", peer_, name);
                co_return end_handshake();
            }
            out.resize(10 + 124);
            std::byte* p = out.data();
            std::fill(out.begin(), out.end(), std::byte{0});
            p = nbd::store_be<std::uint64_t>(p, export_.size());
            nbd::store_be<std::uint16_t>(p, session_transmission_flags(export_));
            const std::size_t n = no_zeroes_ ? 10 : 134;
            if (co_await exact_io(ring, fd, exact_io::dir::send, out.data(), n) != static_cast<long>(n)) {
                co_return end_handshake();
            }
            meta_.clear();  // EXPORT_NAME cannot carry a context selection
            co_return begin_transmission();
        }
        case nbd::opt_abort:
            co_await reply(opt, nbd::rep_ack, nullptr, 0);
            co_return end_handshake();
        case nbd::opt_list: {
            if (len != 0) {
                if (co_await error_reply(nbd::rep_err_invalid, "LIST takes no data") < 0) {
                    co_return end_handshake();
                }
                break;
            }
            bool ok = true;
            std::vector<std::string> names;
            const auto peer = peer_of_socket(fd);
            for (const auto& d : worker_.registry().list()) {
                if (!worker_.config().access.may_open(peer, d->name())) {
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
                if (co_await reply(opt, nbd::rep_server, item.data(), static_cast<std::uint32_t>(item.size())) < 0) {
                    ok = false;
                    break;
                }
            }
            if (!ok || co_await reply(opt, nbd::rep_ack, nullptr, 0) < 0) {
                co_return end_handshake();
            }
            break;
        }
        case nbd::opt_structured_reply:
            if (len != 0) {
                if (co_await error_reply(nbd::rep_err_invalid, "STRUCTURED_REPLY takes no data") < 0) {
                    co_return end_handshake();
                }
                break;
            }
            structured_ = true;
            if (co_await reply(opt, nbd::rep_ack, nullptr, 0) < 0) {
                co_return end_handshake();
            }
            break;
        case nbd::opt_info:
        case nbd::opt_go: {
            const auto req = nbd::parse_info_request(data);
            if (!req) {
                if (co_await error_reply(nbd::rep_err_invalid, "malformed INFO/GO request") < 0) {
                    co_return end_handshake();
                }
                break;
            }
            std::string why;
            auto d = lookup_export(req->name, why);
            if (!d) {
                if (co_await error_reply(nbd::rep_err_unknown, why) < 0) {
                    co_return end_handshake();
                }
                break;
            }
            std::array<std::byte, 16> info{};
            std::byte* p = nbd::store_be<std::uint16_t>(info.data(), nbd::info_export);
            p = nbd::store_be<std::uint64_t>(p, d.size());
            nbd::store_be<std::uint16_t>(p, session_transmission_flags(d));
            if (co_await reply(opt, nbd::rep_info, info.data(), 12) < 0) {
                co_return end_handshake();
            }
            p = nbd::store_be<std::uint16_t>(info.data(), nbd::info_block_size);
            p = nbd::store_be<std::uint32_t>(p, 1);
            p = nbd::store_be<std::uint32_t>(p, 4096);
            nbd::store_be<std::uint32_t>(p, worker_.config().max_payload);
            if (co_await reply(opt, nbd::rep_info, info.data(), 14) < 0) {
                co_return end_handshake();
            }
            if (req->want_name || req->want_description) {
                const std::string text = req->want_name ? d.name() : "rct disk " + d.name();
                std::vector<std::byte> item(2 + text.size());
                nbd::store_be<std::uint16_t>(item.data(), req->want_name ? nbd::info_name : nbd::info_description);
                std::memcpy(item.data() + 2, text.data(), text.size());
                if (co_await reply(opt, nbd::rep_info, item.data(), static_cast<std::uint32_t>(item.size())) < 0) {
                    co_return end_handshake();
                }
            }
            if (co_await reply(opt, nbd::rep_ack, nullptr, 0) < 0) {
                co_return end_handshake();
            }
            if (opt == nbd::opt_go) {
                export_ = std::move(d);
                if (meta_export_ != req->name) {
                    meta_.clear();
                }
                co_return begin_transmission();
            }
            break;
        }
        case nbd::opt_list_meta_context:
        case nbd::opt_set_meta_context: {
            const bool list = opt == nbd::opt_list_meta_context;
            if (!list) {
                meta_.clear();  // replaced even if this SET fails
                meta_export_.clear();
            }
            if (!structured_) {
                if (co_await error_reply(nbd::rep_err_invalid, "negotiate structured replies first") < 0) {
                    co_return end_handshake();
                }
                break;
            }
            const auto req = nbd::parse_meta_context_request(data);
            if (!req) {
                if (co_await error_reply(nbd::rep_err_invalid, "malformed meta context request") < 0) {
                    co_return end_handshake();
                }
                break;
            }
            std::string why;
            auto target = lookup_export(req->name, why);
            if (!target) {
                if (co_await error_reply(nbd::rep_err_unknown, why) < 0) {
                    co_return end_handshake();
                }
                break;
            }
            auto matched = nbd::match_contexts(offered_checkpoints(target), req->queries, list);
            if (!matched) {
                if (co_await error_reply(nbd::rep_err_too_big, "too many meta context queries (at most 256)") < 0) {
                    co_return end_handshake();
                }
                break;
            }
            // Every context and the ACK in one send, however many there are.
            out.clear();
            for (const auto& m : *matched) {
                std::byte* p = append_reply(out, opt, nbd::rep_meta_context, 4 + m.name.size());
                p = nbd::store_be<std::uint32_t>(p, m.id);
                std::memcpy(p, m.name.data(), m.name.size());
            }
            append_reply(out, opt, nbd::rep_ack, 0);
            if (!list) {
                meta_ = std::move(*matched);
                meta_export_ = req->name;
            }
            if (co_await exact_io(ring, fd, exact_io::dir::send, out.data(), out.size()) !=
                static_cast<long>(out.size())) {
                co_return end_handshake();
            }
            break;
        }
        default:
            if (co_await error_reply(nbd::rep_err_unsup, "option not supported") < 0) {
                co_return end_handshake();
            }
            break;
        }
    }
}

}  // namespace rct::daemon
