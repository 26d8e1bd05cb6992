// Little-endian payload encoding for the on-disk records of docs/format/
// and for the live-upgrade hand-over state (docs/upgrade.md).
// payload_writer appends fixed-width integers, length-prefixed strings and
// byte blobs; payload_reader reads them back and throws errc::corrupt
// instead of ever reading past the end, so a damaged record cannot be
// misparsed silently.
#pragma once

#include <rct/error.hh>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace rct::persist {

// The one little-endian codec of every format in docs/format/.
template <typename T>
void store_le(std::uint8_t* p, T v) noexcept
{
    for (std::size_t i = 0; i < sizeof(T); ++i) {
        p[i] = static_cast<std::uint8_t>(static_cast<std::uint64_t>(v) >> (8 * i));
    }
}

template <typename T>
T load_le(const std::uint8_t* p) noexcept
{
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i) {
        v |= static_cast<std::uint64_t>(p[i]) << (8 * i);
    }
    return static_cast<T>(v);
}

class payload_writer {
public:
    template <typename T>
    payload_writer& put(T v)
    {
        buf.resize(buf.size() + sizeof(T));
        store_le(buf.data() + buf.size() - sizeof(T), v);
        return *this;
    }
    payload_writer& put_string(const std::string& s)
    {
        put<std::uint16_t>(static_cast<std::uint16_t>(s.size()));
        buf.insert(buf.end(), s.begin(), s.end());
        return *this;
    }
    // A blob: u32 length, then the bytes.
    template <typename Byte>
    payload_writer& put_bytes(const std::vector<Byte>& b)
    {
        static_assert(sizeof(Byte) == 1);
        put<std::uint32_t>(static_cast<std::uint32_t>(b.size()));
        const auto* p = reinterpret_cast<const std::uint8_t*>(b.data());
        buf.insert(buf.end(), p, p + b.size());
        return *this;
    }
    std::vector<std::uint8_t> buf;
};

class payload_reader {
public:
    payload_reader(const std::uint8_t* p, std::size_t n) : p_(p), n_(n) {}
    template <typename T>
    T get()
    {
        need(sizeof(T));
        const T v = load_le<T>(p_ + pos_);
        pos_ += sizeof(T);
        return v;
    }
    std::string get_string()
    {
        const auto n = get<std::uint16_t>();
        need(n);
        std::string s(reinterpret_cast<const char*>(p_ + pos_), n);
        pos_ += n;
        return s;
    }
    template <typename Byte>
    std::vector<Byte> get_bytes()
    {
        static_assert(sizeof(Byte) == 1);
        const auto n = get<std::uint32_t>();
        need(n);
        const auto* b = reinterpret_cast<const Byte*>(p_ + pos_);
        pos_ += n;
        return std::vector<Byte>(b, b + n);
    }
    // Bytes left; callers check counts against it before allocating.
    std::size_t remaining() const { return n_ - pos_; }
    bool done() const { return pos_ == n_; }

private:
    void need(std::size_t k)
    {
        if (n_ - pos_ < k) {
            throw error(errc::corrupt, "record shorter than its fields");
        }
    }
    const std::uint8_t* p_;
    std::size_t n_;
    std::size_t pos_ = 0;
};

}  // namespace rct::persist
