#include "nbd.hh"

#include <algorithm>

namespace rct::backup {

using tools::exit_failure;
using tools::failure;

connection::connection(const std::string& where, bool is_socket) : h_(nbd_create()), where_(where)
{
    if (h_ == nullptr) {
        fail("cannot create a libnbd handle");
    }
    if (nbd_add_meta_context(h_, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1) {
        fail("cannot ask for base:allocation");
    }
    const int rc = is_socket ? nbd_connect_unix(h_, where.c_str()) : nbd_connect_uri(h_, where.c_str());
    if (rc == -1) {
        fail("cannot connect");
    }
    const int64_t size = nbd_get_size(h_);
    if (size < 0) {
        fail("cannot get the export's size");
    }
    size_ = static_cast<std::uint64_t>(size);
    const int64_t max = nbd_get_block_size(h_, LIBNBD_SIZE_MAXIMUM);
    if (max > 0) {
        max_request_ = std::min<std::uint64_t>(max_request_, static_cast<std::uint64_t>(max));
    }
}

connection::~connection()
{
    if (h_ != nullptr) {
        nbd_shutdown(h_, 0);
        nbd_close(h_);
    }
}

void connection::fail(const std::string& what) const
{
    const char* e = nbd_get_error();
    throw failure{exit_failure, where_ + ": " + what + (e != nullptr ? std::string(": ") + e : ""), {}, {}};
}

void connection::read(void* buf, std::uint64_t length, std::uint64_t offset)
{
    if (nbd_pread(h_, buf, length, offset, 0) == -1) {
        fail("read of " + std::to_string(length) + " bytes at " + std::to_string(offset) + " failed");
    }
}

void connection::write(const void* buf, std::uint64_t length, std::uint64_t offset)
{
    if (nbd_pwrite(h_, buf, length, offset, 0) == -1) {
        fail("write of " + std::to_string(length) + " bytes at " + std::to_string(offset) + " failed");
    }
}

std::int64_t connection::start_read(char* buf, std::uint64_t length, std::uint64_t offset)
{
    const std::int64_t cookie = nbd_aio_pread(h_, buf, length, offset, NBD_NULL_COMPLETION, 0);
    if (cookie == -1) {
        fail("read of " + std::to_string(length) + " bytes at " + std::to_string(offset) + " failed");
    }
    return cookie;
}

void connection::wait(std::int64_t cookie)
{
    for (;;) {
        const int r = nbd_aio_command_completed(h_, static_cast<std::uint64_t>(cookie));
        if (r == 1) {
            return;
        }
        if (r == -1 || nbd_poll(h_, -1) == -1) {
            fail("read");
        }
    }
}

void connection::make_room(std::size_t depth)
{
    while (writes_.size() >= std::max<std::size_t>(depth, 1)) {
        reap(true);
    }
}

void connection::write_async(buffer data, std::uint64_t offset, std::size_t depth)
{
    const std::size_t n = data.size();
    write_async(std::make_shared<const buffer>(std::move(data)), 0, n, offset, depth);
}

void connection::write_async(std::shared_ptr<const buffer> data, std::size_t at, std::size_t length,
                             std::uint64_t offset, std::size_t depth)
{
    make_room(depth);
    const std::int64_t cookie = nbd_aio_pwrite(h_, data->data() + at, length, offset, NBD_NULL_COMPLETION, 0);
    if (cookie == -1) {
        fail("write of " + std::to_string(length) + " bytes at " + std::to_string(offset) + " failed");
    }
    writes_.push_back({cookie, std::move(data)});
}

void connection::zero_async(std::uint64_t length, std::uint64_t offset, std::size_t depth)
{
    constexpr std::uint64_t most = 1 << 30;  // a request's length is 32 bits
    for (std::uint64_t at = 0; at < length; at += most) {
        const std::uint64_t n = std::min(most, length - at);
        make_room(depth);
        const std::int64_t cookie = nbd_aio_zero(h_, n, offset + at, NBD_NULL_COMPLETION, 0);
        if (cookie == -1) {
            fail("zeroing " + std::to_string(n) + " bytes at " + std::to_string(offset + at) + " failed");
        }
        writes_.push_back({cookie, nullptr});
    }
}

void connection::reap(bool block)
{
    if (block && nbd_poll(h_, -1) == -1) {
        fail("write");
    }
    for (auto it = writes_.begin(); it != writes_.end();) {
        const int r = nbd_aio_command_completed(h_, static_cast<std::uint64_t>(it->cookie));
        if (r == -1) {
            fail("write");
        }
        it = r == 1 ? writes_.erase(it) : it + 1;
    }
}

void connection::wait_writes()
{
    while (!writes_.empty()) {
        reap(true);
    }
}

void connection::zero(std::uint64_t length, std::uint64_t offset)
{
    if (nbd_zero(h_, length, offset, 0) == -1) {
        fail("zeroing " + std::to_string(length) + " bytes at " + std::to_string(offset) + " failed");
    }
}

void connection::flush()
{
    if (nbd_flush(h_, 0) == -1) {
        fail("flush failed");
    }
}

namespace {

struct extent_walk {
    std::vector<extent>* out;
    std::uint64_t end;
};

int on_extents(void* user, const char* context, std::uint64_t offset, std::uint32_t* entries, std::size_t n,
               int* /*error*/)
{
    auto* walk = static_cast<extent_walk*>(user);
    if (std::string_view(context) != LIBNBD_CONTEXT_BASE_ALLOCATION) {
        return 0;
    }
    for (std::size_t i = 0; i + 1 < n && offset < walk->end; i += 2) {
        const std::uint64_t length = std::min<std::uint64_t>(entries[i], walk->end - offset);
        const bool zero = (entries[i + 1] & LIBNBD_STATE_ZERO) != 0;
        if (!walk->out->empty() && walk->out->back().zero == zero &&
            walk->out->back().offset + walk->out->back().length == offset) {
            walk->out->back().length += length;
        } else {
            walk->out->push_back({offset, length, zero});
        }
        offset += length;
    }
    return 0;
}

}  // namespace

std::vector<extent> connection::extents(std::uint64_t offset, std::uint64_t length)
{
    std::vector<extent> out;
    const std::uint64_t end = offset + length;
    extent_walk walk{&out, end};
    // Without base:allocation (a server that does not offer it) all is data.
    if (nbd_can_meta_context(h_, LIBNBD_CONTEXT_BASE_ALLOCATION) != 1) {
        return {{offset, length, false}};
    }
    while (offset < end) {
        // Requests are 32-bit; ask for at most 1 GiB at a time.
        const std::uint64_t ask = std::min<std::uint64_t>(end - offset, std::uint64_t{1} << 30);
        const std::size_t before = out.size();
        const std::uint64_t reached = out.empty() ? offset : out.back().offset + out.back().length;
        if (nbd_block_status(h_, ask, offset, nbd_extent_callback{&on_extents, &walk, nullptr}, 0) == -1) {
            fail("block status at " + std::to_string(offset) + " failed");
        }
        const std::uint64_t now = out.empty() ? offset : out.back().offset + out.back().length;
        if (out.size() == before && now == reached) {
            fail("block status at " + std::to_string(offset) + " made no progress");
        }
        offset = now;
    }
    return out;
}

std::vector<extent> connection::extents(const std::vector<byte_range>& unsorted)
{
    // Ranges closer than this are walked as one window: the walk's replies
    // over the gap cost less than a round trip per range.
    constexpr std::uint64_t window_gap = 64 << 20;
    // The clipping below needs them in order and apart; whoever sent them.
    std::vector<byte_range> ranges;
    std::vector<byte_range> in = unsorted;
    std::sort(in.begin(), in.end());
    for (const auto& [o, l] : in) {
        if (!ranges.empty() && o <= ranges.back().first + ranges.back().second) {
            ranges.back().second = std::max(ranges.back().first + ranges.back().second, o + l) - ranges.back().first;
        } else if (l > 0) {
            ranges.emplace_back(o, l);
        }
    }
    std::vector<extent> out;
    for (std::size_t i = 0; i < ranges.size();) {
        std::size_t j = i + 1;
        std::uint64_t end = ranges[i].first + ranges[i].second;
        while (j < ranges.size() && ranges[j].first <= end + window_gap) {
            end = std::max(end, ranges[j].first + ranges[j].second);
            ++j;
        }
        const std::vector<extent> walked = extents(ranges[i].first, end - ranges[i].first);
        auto e = walked.begin();
        for (; i < j; ++i) {
            const std::uint64_t from = ranges[i].first, to = from + ranges[i].second;
            while (e != walked.end() && e->offset + e->length <= from) {
                ++e;
            }
            for (auto f = e; f != walked.end() && f->offset < to; ++f) {
                const std::uint64_t a = std::max(from, f->offset), b = std::min(to, f->offset + f->length);
                out.push_back({a, b - a, f->zero});
            }
        }
    }
    return out;
}

}  // namespace rct::backup
