// The hand-over channel and state blob; layout in docs/upgrade.md.
#include "handover.hh"

#include <rct/codec.hh>
#include <rct/error.hh>

#include <fmt/format.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <cstring>
#include <ctime>

namespace rct::daemon::upgrade {
namespace {

using persist::load_le;
using persist::payload_reader;
using persist::payload_writer;
using persist::store_le;

constexpr std::uint32_t msg_magic = 0x55544352;  // "RCTU"
constexpr std::size_t header_size = 24;
constexpr std::size_t max_payload = 64 * 1024;
constexpr std::uint64_t blob_magic = 0x3145544154535452;  // "RTSTATE1"
constexpr std::size_t blob_header = 32;
// Far above any real state (a connection's unsent bytes are bounded by its
// memory share); a peer cannot make us map more.
constexpr std::uint64_t max_blob = std::uint64_t{8} << 30;

void put_checked_string(payload_writer& w, const std::string& s)
{
    if (s.size() > 0xffff) {
        throw error(errc::invalid_argument, "hand-over string longer than 64 KiB");
    }
    w.put_string(s);
}

void encode_session(payload_writer& w, const nbd::session_state& st)
{
    w.put<std::uint8_t>(static_cast<std::uint8_t>(st.at));
    w.put<std::uint8_t>(static_cast<std::uint8_t>((st.neg.structured ? 1 : 0) | (st.neg.no_zeroes ? 2 : 0)));
    put_checked_string(w, st.peer);
    put_checked_string(w, st.export_name);
    put_checked_string(w, st.neg.meta_export);
    w.put<std::uint32_t>(st.drain_opt);
    w.put<std::uint64_t>(st.drain_left);
    w.put<std::uint32_t>(static_cast<std::uint32_t>(st.neg.meta.size()));
    for (const auto& m : st.neg.meta) {
        w.put<std::uint32_t>(m.id);
        w.put<std::uint8_t>(static_cast<std::uint8_t>(m.kind));
        w.put<std::uint64_t>(m.epoch);
        w.put<std::uint32_t>(m.generation);
        put_checked_string(w, m.name);
    }
    w.put_bytes(st.input);
    w.put_bytes(st.output);
}

void need_items(const payload_reader& r, std::uint64_t n, std::size_t min_each, const char* what)
{
    if (n > r.remaining() / min_each) {
        throw error(errc::corrupt, fmt::format("hand-over state: {} {} cannot fit in what is left", n, what));
    }
}

nbd::session_state decode_session(payload_reader& r)
{
    nbd::session_state st;
    const auto at = r.get<std::uint8_t>();
    if (at < 1 || at > 3) {
        throw error(errc::corrupt, fmt::format("hand-over state: unknown connection phase {}", at));
    }
    st.at = static_cast<nbd::phase>(at);
    const auto flags = r.get<std::uint8_t>();
    if ((flags & ~3u) != 0) {
        throw error(errc::corrupt, "hand-over state: unknown connection flags");
    }
    st.neg.structured = (flags & 1) != 0;
    st.neg.no_zeroes = (flags & 2) != 0;
    st.peer = r.get_string();
    st.export_name = r.get_string();
    st.neg.meta_export = r.get_string();
    st.drain_opt = r.get<std::uint32_t>();
    st.drain_left = r.get<std::uint64_t>();
    const auto n = r.get<std::uint32_t>();
    need_items(r, n, 19, "meta contexts");
    for (std::uint32_t i = 0; i < n; ++i) {
        nbd::meta_context m;
        m.id = r.get<std::uint32_t>();
        const auto kind = r.get<std::uint8_t>();
        if (kind > static_cast<std::uint8_t>(nbd::meta_kind::dirty_bitmap)) {
            throw error(errc::corrupt, "hand-over state: unknown meta context kind");
        }
        m.kind = static_cast<nbd::meta_kind>(kind);
        m.epoch = r.get<std::uint64_t>();
        m.generation = r.get<std::uint32_t>();
        m.name = r.get_string();
        st.neg.meta.push_back(std::move(m));
    }
    st.input = r.get_bytes<std::byte>();
    st.output = r.get_bytes<std::byte>();
    if (st.at != nbd::phase::transmission && (!st.export_name.empty() || !st.output.empty())) {
        throw error(errc::corrupt, "hand-over state: a handshaking connection with an export or pending replies");
    }
    if (st.at == nbd::phase::transmission && (st.export_name.empty() || st.drain_left != 0)) {
        throw error(errc::corrupt, "hand-over state: a transmitting connection without an export");
    }
    return st;
}

// The runs' order and bounds are the tracker's to check (take_handoff), as
// for any run list it reads.
void decode_disks(payload_reader& r, state& s)
{
    const auto ndisks = r.get<std::uint32_t>();
    need_items(r, ndisks, 30, "disks");  // an empty id and no runs
    for (std::uint32_t i = 0; i < ndisks; ++i) {
        std::string id = r.get_string();
        tracker_handoff h;
        h.generation = r.get<std::uint32_t>();
        h.epoch = r.get<std::uint64_t>();
        h.chunks = r.get<std::uint64_t>();
        const auto nruns = r.get<std::uint64_t>();
        need_items(r, nruns, 16, "change runs");
        h.runs.resize(nruns);
        for (auto& run : h.runs) {
            run.start = r.get<std::uint64_t>();
            run.count = r.get<std::uint64_t>();
        }
        if (!s.disks.emplace(std::move(id), std::move(h)).second) {
            throw error(errc::corrupt, "hand-over state: a disk twice");
        }
    }
}

std::uint32_t fd_index(payload_reader& r, std::size_t fd_count, bool optional = false)
{
    const auto i = r.get<std::uint32_t>();
    if (i >= fd_count && !(optional && i == state::no_fd)) {
        throw error(errc::corrupt, fmt::format("hand-over state: descriptor {} of {}", i, fd_count));
    }
    return i;
}

}  // namespace

std::uint64_t body_checksum(std::span<const std::uint8_t> body) noexcept
{
    return XXH3_64bits(body.data(), body.size());
}

std::int64_t monotonic_ns() noexcept
{
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return std::int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

std::vector<std::uint8_t> encode(const state& s)
{
    payload_writer w;
    w.put<std::uint32_t>(s.old_pid);
    put_checked_string(w, s.old_version);
    w.put<std::int64_t>(s.frozen_at_ns);
    w.put<std::uint32_t>(s.lock_fd);
    w.put<std::uint32_t>(static_cast<std::uint32_t>(s.sockets.size()));
    for (const auto& l : s.sockets) {
        w.put<std::uint8_t>(static_cast<std::uint8_t>(l.kind));
        w.put<std::uint32_t>(l.fd);
        put_checked_string(w, l.address);
    }
    w.put<std::uint32_t>(s.requester_fd);
    put_checked_string(w, s.rollback_reason);
    w.put<std::uint32_t>(static_cast<std::uint32_t>(s.connections.size()));
    for (const auto& c : s.connections) {
        w.put<std::uint32_t>(c.fd);
        encode_session(w, c.state);
    }
    w.put<std::uint32_t>(static_cast<std::uint32_t>(s.disks.size()));
    for (const auto& [id, h] : s.disks) {
        put_checked_string(w, id);
        w.put<std::uint32_t>(h.generation);
        w.put<std::uint64_t>(h.epoch);
        w.put<std::uint64_t>(h.chunks);
        w.put<std::uint64_t>(h.runs.size());
        for (const auto& run : h.runs) {
            w.put<std::uint64_t>(run.start);
            w.put<std::uint64_t>(run.count);
        }
    }
    std::vector<std::uint8_t> blob(blob_header);
    store_le<std::uint64_t>(blob.data(), blob_magic);
    store_le<std::uint32_t>(blob.data() + 8, protocol_version);
    store_le<std::uint32_t>(blob.data() + 12, 0);
    store_le<std::uint64_t>(blob.data() + 16, w.buf.size());
    store_le<std::uint64_t>(blob.data() + 24, body_checksum(w.buf));
    blob.insert(blob.end(), w.buf.begin(), w.buf.end());
    return blob;
}

state decode(std::span<const std::uint8_t> blob, std::size_t fd_count)
{
    if (blob.size() < blob_header || load_le<std::uint64_t>(blob.data()) != blob_magic) {
        throw error(errc::corrupt, "hand-over state: not a state blob");
    }
    if (const auto v = load_le<std::uint32_t>(blob.data() + 8); v != protocol_version) {
        throw error(errc::unsupported, fmt::format("hand-over state version {}, this rctd reads {}", v, protocol_version));
    }
    const auto len = load_le<std::uint64_t>(blob.data() + 16);
    if (load_le<std::uint32_t>(blob.data() + 12) != 0 || len != blob.size() - blob_header) {
        throw error(errc::corrupt, "hand-over state: length or flags do not match the blob");
    }
    const std::uint8_t* body = blob.data() + blob_header;
    if (body_checksum({body, static_cast<std::size_t>(len)}) != load_le<std::uint64_t>(blob.data() + 24)) {
        throw error(errc::corrupt, "hand-over state: checksum mismatch");
    }
    payload_reader r(body, len);
    state s;
    s.old_pid = r.get<std::uint32_t>();
    s.old_version = r.get_string();
    s.frozen_at_ns = r.get<std::int64_t>();
    s.lock_fd = fd_index(r, fd_count);
    const auto nsock = r.get<std::uint32_t>();
    need_items(r, nsock, 7, "listening sockets");
    for (std::uint32_t i = 0; i < nsock; ++i) {
        listening_socket l;
        const auto kind = r.get<std::uint8_t>();
        if (kind < 1 || kind > 3) {
            throw error(errc::corrupt, "hand-over state: unknown socket kind");
        }
        l.kind = static_cast<socket_kind>(kind);
        l.fd = fd_index(r, fd_count);
        l.address = r.get_string();
        s.sockets.push_back(std::move(l));
    }
    s.requester_fd = fd_index(r, fd_count, true);
    s.rollback_reason = r.get_string();
    const auto nconn = r.get<std::uint32_t>();
    need_items(r, nconn, 40, "connections");
    for (std::uint32_t i = 0; i < nconn; ++i) {
        frozen_nbd c;
        c.fd = fd_index(r, fd_count);
        c.state = decode_session(r);
        s.connections.push_back(std::move(c));
    }
    decode_disks(r, s);
    if (!r.done()) {
        throw error(errc::corrupt, "hand-over state: bytes after the last disk");
    }
    return s;
}

void send(int sock, msg type, const std::vector<std::uint8_t>& payload, std::span<const int> fds)
{
    if (payload.size() > max_payload || fds.size() > fds_per_message) {
        throw error(errc::invalid_argument, "hand-over message too large");
    }
    std::uint8_t hdr[header_size] = {};
    store_le<std::uint32_t>(hdr, msg_magic);
    store_le<std::uint16_t>(hdr + 4, static_cast<std::uint16_t>(type));
    store_le<std::uint16_t>(hdr + 6, protocol_version);
    store_le<std::uint32_t>(hdr + 8, static_cast<std::uint32_t>(payload.size()));
    store_le<std::uint32_t>(hdr + 12, static_cast<std::uint32_t>(fds.size()));
    iovec iov[2] = {{hdr, header_size}, {const_cast<std::uint8_t*>(payload.data()), payload.size()}};
    msghdr mh{};
    mh.msg_iov = iov;
    mh.msg_iovlen = payload.empty() ? 1 : 2;
    std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()));
    if (!fds.empty()) {
        mh.msg_control = control.data();
        mh.msg_controllen = control.size();
        cmsghdr* c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    ssize_t n;
    do {
        n = ::sendmsg(sock, &mh, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        throw_errno("hand-over channel: send", errno);
    }
}

std::optional<message> receive(int sock, std::chrono::steady_clock::time_point deadline)
{
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            throw error(errc::io_error, "hand-over channel: no message before the deadline");
        }
        pollfd p{sock, POLLIN, 0};
        const int r = ::poll(&p, 1, static_cast<int>(std::min<long long>(left.count(), 60000)));
        if (r < 0 && errno != EINTR) {
            throw_errno("hand-over channel: poll", errno);
        }
        if (r > 0) {
            break;
        }
    }
    std::vector<std::uint8_t> buf(header_size + max_payload + 1);
    std::vector<char> control(CMSG_SPACE(sizeof(int) * fds_per_message));
    iovec iov{buf.data(), buf.size()};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = control.data();
    mh.msg_controllen = control.size();
    ssize_t n;
    do {
        n = ::recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && errno == ECONNRESET) {
        return std::nullopt;  // the peer ended with our message unread: gone all the same
    }
    if (n < 0) {
        throw_errno("hand-over channel: receive", errno);
    }
    message m;
    // Descriptors first, so that they are closed whatever is wrong below.
    for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c != nullptr; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            const std::size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (std::size_t i = 0; i < k; ++i) {
                int fd;
                std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
                m.fds.emplace_back(fd);
            }
        }
    }
    if (n == 0) {
        return std::nullopt;
    }
    if ((mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
        throw error(errc::corrupt, "hand-over channel: message or descriptors truncated");
    }
    const auto len = static_cast<std::size_t>(n);
    if (len < header_size || load_le<std::uint32_t>(buf.data()) != msg_magic) {
        throw error(errc::corrupt, "hand-over channel: not a hand-over message");
    }
    m.type = static_cast<msg>(load_le<std::uint16_t>(buf.data() + 4));
    m.version = load_le<std::uint16_t>(buf.data() + 6);
    const auto plen = load_le<std::uint32_t>(buf.data() + 8);
    if (plen != len - header_size || load_le<std::uint32_t>(buf.data() + 12) != m.fds.size()) {
        throw error(errc::corrupt, "hand-over channel: message length or descriptor count mismatch");
    }
    if (m.version != protocol_version) {
        throw error(errc::unsupported,
                    fmt::format("the other rctd speaks hand-over version {}, this one {}", m.version, protocol_version));
    }
    m.payload.assign(buf.begin() + header_size, buf.begin() + static_cast<std::ptrdiff_t>(len));
    return m;
}

void send_state(int sock, const state& s, std::span<const int> fds)
{
    const auto blob = encode(s);
    unique_fd mem(::memfd_create("rctd-handover", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (!mem) {
        throw_errno("memfd_create", errno);
    }
    std::size_t done = 0;
    while (done < blob.size()) {
        const ssize_t n = ::write(mem.get(), blob.data() + done, blob.size() - done);
        if (n < 0 && errno != EINTR) {
            throw_errno("hand-over state: write", errno);
        }
        done += n > 0 ? static_cast<std::size_t>(n) : 0;
    }
    if (::fcntl(mem.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) != 0) {
        throw_errno("hand-over state: seal", errno);
    }
    payload_writer w;
    w.put<std::uint32_t>(static_cast<std::uint32_t>(fds.size()));
    const int memfd = mem.get();
    send(sock, msg::state, w.buf, std::span<const int>(&memfd, 1));
    for (std::size_t i = 0; i < fds.size(); i += fds_per_message) {
        payload_writer b;
        b.put<std::uint32_t>(static_cast<std::uint32_t>(i));
        send(sock, msg::fds, b.buf, fds.subspan(i, std::min(fds_per_message, fds.size() - i)));
    }
}

std::pair<state, std::vector<unique_fd>> receive_state(int sock, std::chrono::steady_clock::time_point deadline)
{
    auto m = receive(sock, deadline);
    if (!m || m->type != msg::state || m->fds.size() != 1 || m->payload.size() != 4) {
        throw error(errc::corrupt, "hand-over channel: expected the state");
    }
    const auto total = load_le<std::uint32_t>(m->payload.data());
    const int memfd = m->fds[0].get();
    const int seals = ::fcntl(memfd, F_GET_SEALS);
    constexpr int want = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL;
    if (seals < 0 || (seals & want) != want) {
        throw error(errc::corrupt, "hand-over state: the memfd is not sealed");
    }
    struct stat st {};
    if (::fstat(memfd, &st) != 0 || st.st_size < 0 || static_cast<std::uint64_t>(st.st_size) > max_blob) {
        throw error(errc::corrupt, "hand-over state: bad size");
    }
    std::vector<unique_fd> fds;
    while (fds.size() < total) {
        auto b = receive(sock, deadline);
        if (!b || b->type != msg::fds || b->payload.size() != 4 || load_le<std::uint32_t>(b->payload.data()) != fds.size() ||
            b->fds.empty() || b->fds.size() > total - fds.size()) {
            throw error(errc::corrupt, "hand-over channel: descriptors missing or out of order");
        }
        for (auto& fd : b->fds) {
            fds.push_back(std::move(fd));
        }
    }
    std::vector<std::uint8_t> blob(static_cast<std::size_t>(st.st_size));
    std::size_t done = 0;
    while (done < blob.size()) {
        const ssize_t n = ::pread(memfd, blob.data() + done, blob.size() - done, static_cast<off_t>(done));
        if (n <= 0) {
            if (n < 0 && errno == EINTR) {
                continue;
            }
            throw error(errc::corrupt, "hand-over state: short read");
        }
        done += static_cast<std::size_t>(n);
    }
    return {decode(blob, fds.size()), std::move(fds)};
}

std::vector<std::uint8_t> encode_hello(const hello& h)
{
    payload_writer w;
    w.put<std::uint32_t>(h.pid);
    put_checked_string(w, h.version);
    return w.buf;
}

hello decode_hello(std::span<const std::uint8_t> p)
{
    payload_reader r(p.data(), p.size());
    hello h;
    h.pid = r.get<std::uint32_t>();
    h.version = r.get_string();
    return h;
}

}  // namespace rct::daemon::upgrade
