// session_state: everything an NBD connection has agreed with its client
// and everything in transit on its socket, as one value, so that a live
// upgrade (upgrade/handover.hh) can move the connection to another process
// without the client noticing: the phase it is in, what was negotiated,
// the bytes received and not yet parsed, and the reply bytes not yet sent.
// A connection is frozen into one only at a point where nothing else is in
// flight (no disk request outstanding, no socket operation pending), and is
// rebuilt from one by connection's resuming constructor.
#pragma once

#include "options.hh"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace rct::nbd {

// Where in the protocol the connection stands. The greeting has been sent
// in every phase; `flags` waits for the client's flags, `options` for its
// next option (or the rest of one being discarded), `transmission` for
// its next request.
enum class phase : std::uint8_t { flags = 1, options = 2, transmission = 3 };

struct negotiated {
    bool structured = false;
    bool no_zeroes = false;
    std::vector<meta_context> meta;  // selected contexts, in reply order
    std::string meta_export;         // export named by the last SET_META_CONTEXT
};

struct session_state {
    phase at = phase::flags;
    negotiated neg;
    std::string export_name;  // transmission: the export chosen
    std::string peer;         // for logs and admission
    // options: an oversized option still being read and discarded.
    std::uint32_t drain_opt = 0;
    std::uint64_t drain_left = 0;
    std::vector<std::byte> input;   // received, not yet parsed
    std::vector<std::byte> output;  // reply bytes not yet sent, in order
};

}  // namespace rct::nbd
