#include <rct/error.hh>

#include <cstring>

namespace rct {

void throw_errno(const std::string& what, int err)
{
    throw error(errc::io_error, what + ": " + std::strerror(err));
}

}  // namespace rct
