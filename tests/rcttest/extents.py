"""Extent and chunk arithmetic on (offset, length) pairs."""


def chunk_range(off, length, g):
    """The chunk numbers (granularity g) that [off, off + length) touches."""
    return range(off // g, (off + length - 1) // g + 1)


def merge(extents):
    """Coalesce adjacent (offset, length) pairs, in order: a list of [o, l]."""
    out = []
    for o, l in extents:
        if out and out[-1][0] + out[-1][1] == o:
            out[-1][1] += l
        else:
            out.append([o, l])
    return out


def chunks_to_extents(chunks, g):
    """Chunk numbers -> coalesced [offset, length] extents of granularity g."""
    return merge((c * g, g) for c in sorted(chunks))


def read_pairs(path):
    """The "offset length" lines of a file, as (int, int) tuples."""
    with open(path) as f:
        return [tuple(map(int, line.split())) for line in f if line.strip()]


def print_pairs(pairs):
    for o, l in pairs:
        print(o, l)
