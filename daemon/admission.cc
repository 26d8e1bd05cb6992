#include "admission.hh"

namespace rct::daemon {

admission::ticket& admission::ticket::operator=(ticket&& o) noexcept
{
    if (this != &o) {
        reset();
        owner_ = o.owner_;
        peer_ = std::move(o.peer_);
        o.owner_ = nullptr;
    }
    return *this;
}

void admission::ticket::reset() noexcept
{
    if (owner_ != nullptr) {
        owner_->release(peer_);
        owner_ = nullptr;
    }
}

std::optional<admission::ticket> admission::admit(const std::string& peer, const char** why)
{
    rct::lock_guard lock(mu_);
    if (total_ >= max_total_) {
        *why = "the daemon is at its connection limit";
        return std::nullopt;
    }
    unsigned& n = per_peer_[peer];
    if (n >= max_per_peer_) {
        *why = "that peer is at its connection limit";
        return std::nullopt;
    }
    ++n;
    ++total_;
    return ticket(this, peer);
}

unsigned admission::total() const
{
    rct::lock_guard lock(mu_);
    return total_;
}

void admission::release(const std::string& peer) noexcept
{
    rct::lock_guard lock(mu_);
    --total_;
    if (auto it = per_peer_.find(peer); it != per_peer_.end() && --it->second == 0) {
        per_peer_.erase(it);
    }
}

}  // namespace rct::daemon
