// admission: how many NBD connections rctd holds, in all and per peer, and
// the refusal of those above either limit.
//
// A peer is a Unix client's uid (SO_PEERCRED) or a TCP client's address, so
// one user or host cannot take every slot from the others. The listener asks
// admit() for each accepted socket; a granted ticket travels with the
// connection to its worker and gives its slot back when destroyed, on
// whichever thread that happens. Thread-safe.
#pragma once

#include <rct/thread_annotations.hh>

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>

namespace rct::daemon {

class admission {
public:
    class ticket {
    public:
        ticket() = default;
        ticket(ticket&& o) noexcept : owner_(o.owner_), peer_(std::move(o.peer_)) { o.owner_ = nullptr; }
        ticket& operator=(ticket&& o) noexcept;
        ~ticket() { reset(); }
        void reset() noexcept;

    private:
        friend class admission;
        ticket(admission* owner, std::string peer) : owner_(owner), peer_(std::move(peer)) {}
        admission* owner_ = nullptr;
        std::string peer_;
    };

    admission(unsigned max_total, unsigned max_per_peer) : max_total_(max_total), max_per_peer_(max_per_peer) {}

    // Empty when peer (or everyone) is at its limit; *why then says which.
    std::optional<ticket> admit(const std::string& peer, std::string* why) EXCLUDES(mu_);

private:
    void release(const std::string& peer) noexcept EXCLUDES(mu_);

    const unsigned max_total_;
    const unsigned max_per_peer_;
    mutable rct::mutex mu_;
    unsigned total_ GUARDED_BY(mu_) = 0;
    std::unordered_map<std::string, unsigned> per_peer_ GUARDED_BY(mu_);
};

}  // namespace rct::daemon
