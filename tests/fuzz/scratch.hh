// A private scratch directory for harnesses whose decoder reads a file:
// the input is written to DIR/NAME (on /dev/shm when it exists) and the
// real reader opens it, so what is fuzzed is exactly what rctd runs.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace rct::fuzz {

inline const std::filesystem::path& scratch_dir()
{
    static const std::filesystem::path dir = [] {
        const std::string base = std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : "/tmp";
        std::string tmpl = base + "/rct-fuzz-XXXXXX";
        if (::mkdtemp(tmpl.data()) == nullptr) {
            std::abort();
        }
        return std::filesystem::path(tmpl);
    }();
    return dir;
}

// Replaces DIR/name with the input and returns its path.
inline std::filesystem::path put_file(const std::string& name, const std::uint8_t* data, std::size_t size)
{
    const auto p = scratch_dir() / name;
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    return p;
}

}  // namespace rct::fuzz
