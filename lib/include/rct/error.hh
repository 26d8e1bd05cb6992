// rct::error: the exception type of setup and management paths.
//
// The data path never throws: it carries negative errno values from CQEs
// straight to replies. Management operations (creating, resizing, deleting
// disks, starting the daemon) throw rct::error with a category that frontends
// map to their own vocabulary (HTTP status, rctctl exit code).
#pragma once

#include <stdexcept>
#include <string>

namespace rct {

enum class errc {
    invalid_argument,  // malformed name, size, option
    not_found,         // no such disk
    exists,            // name already taken
    busy,              // refused while in use (connected clients)
    io_error,          // the operating system failed us
    corrupt,           // metadata failed validation
    full_backup_required,  // a change token that cannot be honoured
    unsupported,       // this kernel or machine lacks what the operation needs
    cancelled,         // stopped on request (rct::progress::cancel)
};

class error : public std::runtime_error {
public:
    error(errc code, const std::string& what) : std::runtime_error(what), code_(code) {}
    errc code() const noexcept { return code_; }

private:
    errc code_;
};

// Throws rct::error(io_error) naming the failed call and errno's text.
[[noreturn]] void throw_errno(const std::string& what, int err);

}  // namespace rct
