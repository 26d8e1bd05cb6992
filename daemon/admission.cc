#include "admission.hh"

#include <fmt/format.h>

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

std::optional<admission::ticket> admission::admit(const std::string& peer, std::string* why)
{
    rct::lock_guard lock(mu_);
    if (total_ >= max_total_) {
        *why = fmt::format("rctd holds {} connections (--max-connections, or the descriptor limit less --fd-reserve)",
                           total_);
        return std::nullopt;
    }
    unsigned& n = per_peer_[peer];
    if (n >= max_per_peer_) {
        *why = fmt::format("{} holds {} connections (--max-connections-per-peer)", peer, n);
        return std::nullopt;
    }
    ++n;
    ++total_;
    return ticket(this, peer);
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
