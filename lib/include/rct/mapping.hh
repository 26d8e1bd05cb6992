// mapping: sole owner of an mmap(2)ed range, unmapped on destruction.
//
// Move-only, like unique_fd. Used for memory the kernel shares with us
// (ublk's request descriptors) and for large lazily-backed buffers.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <utility>

namespace rct {

class mapping {
public:
    mapping() noexcept = default;
    // Takes a successful mmap result (not MAP_FAILED).
    mapping(void* p, std::size_t len) noexcept : p_(p), len_(len) {}
    mapping(mapping&& o) noexcept : p_(std::exchange(o.p_, nullptr)), len_(std::exchange(o.len_, 0)) {}
    mapping& operator=(mapping&& o) noexcept
    {
        if (this != &o) {
            reset();
            p_ = std::exchange(o.p_, nullptr);
            len_ = std::exchange(o.len_, 0);
        }
        return *this;
    }
    mapping(const mapping&) = delete;
    mapping& operator=(const mapping&) = delete;
    ~mapping() { reset(); }

    void* get() const noexcept { return p_; }
    std::size_t size() const noexcept { return len_; }
    explicit operator bool() const noexcept { return p_ != nullptr; }
    void reset() noexcept
    {
        if (p_ != nullptr) {
            ::munmap(p_, len_);
        }
        p_ = nullptr;
        len_ = 0;
    }

private:
    void* p_ = nullptr;
    std::size_t len_ = 0;
};

}  // namespace rct
