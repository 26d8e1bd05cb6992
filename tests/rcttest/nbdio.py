"""libnbd helpers (python3-libnbd, module nbd)."""
import nbd

from rcttest.patterns import BLOCK, block_pattern


def connect(uri, contexts=()):
    """A connected handle; contexts are meta contexts to request."""
    h = nbd.NBD()
    for c in contexts:
        h.add_meta_context(c)
    h.connect_uri(uri)
    return h


def read_range(h, off, n, step=32 << 20):
    """n bytes at off, read in requests of at most step bytes."""
    out = []
    while n > 0:
        m = min(n, step)
        out.append(h.pread(m, off))
        off += m
        n -= m
    return b"".join(out)


def prefill_blocks(h, lo, hi, tag=1, step=1 << 20):
    """Write [lo, hi) as whole blocks of tag (see patterns.block_pattern) in
    step-sized writes (lo, hi and step multiples of 4 KiB), then flush."""
    for off in range(lo, hi, step):
        h.pwrite(block_pattern(tag, off // BLOCK, step // BLOCK), off)
    h.flush()


def pwrite_pipelined(h, offsets, block=4096, depth=64):
    """One block of random data at each offset, depth requests in flight."""
    import os
    buf = nbd.Buffer.from_bytearray(bytearray(os.urandom(block)))
    for off in offsets:
        while h.aio_in_flight() >= depth:
            h.poll(-1)
        h.aio_pwrite(buf, off, completion=lambda err: 1)
    while h.aio_in_flight() > 0:
        h.poll(-1)
