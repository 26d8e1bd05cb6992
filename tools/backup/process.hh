// process: the qemu programs rct-backup drives: `qemu-img` run to completion
// and `qemu-nbd` serving one image on a private Unix socket.
//
// A served_image owns its qemu-nbd child and the private directory holding the
// socket; the destructor stops the child (SIGTERM) and removes the directory.
// finish() is the clean end for a writable image: once the client has flushed
// and disconnected, qemu-nbd closes the image (writing qemu's caches) and must
// exit 0.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

namespace rct::backup {

// An unlinked temporary file, closed with its owner: a child's output.
struct temp_file {
    temp_file();
    ~temp_file();
    temp_file(const temp_file&) = delete;
    temp_file& operator=(const temp_file&) = delete;
    std::string contents() const;  // without trailing newlines
    int fd = -1;
};

// Runs argv[0] (found on PATH) and waits; throws a failure naming the command
// and its stderr if it does not exit 0. Returns its stdout.
std::string run(const std::vector<std::string>& argv);

class served_image {
public:
    // Serves `image` (qcow2, with its backing chain) read-only or writable,
    // on a private socket, or (`listen` non-empty) on that Unix socket path
    // or "tcp:HOST:PORT" for any number of clients.
    served_image(const std::string& image, bool writable, const std::string& listen = {});
    ~served_image();
    served_image(const served_image&) = delete;
    served_image& operator=(const served_image&) = delete;

    const std::string& socket() const { return socket_; }
    // The NBD URI clients connect to.
    std::string uri() const;
    // False once qemu-nbd has exited (reaped here).
    bool running();

    // Stops qemu-nbd; throws if it did not close the image cleanly.
    void finish();

private:
    std::string dir_;
    std::string socket_;  // empty when serving on TCP
    std::string host_, port_;
    pid_t pid_ = -1;
    std::unique_ptr<temp_file> log_;  // qemu-nbd's stderr
};

}  // namespace rct::backup
