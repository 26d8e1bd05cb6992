"""Self-describing data patterns: every unit of a write says who wrote it.

A read-back then tells which write a sector or block came from, and whether
it is whole.
"""
import struct

SECTOR = 512
BLOCK = 4096


def sector_pattern(tag, off, n):
    """n bytes for byte offset off: each 512-byte sector is (tag, its byte
    offset) as two little-endian u64, 32 times."""
    return b"".join(struct.pack("<QQ", tag, off + i) * (SECTOR // 16) for i in range(0, n, SECTOR))


def block_pattern(tag, blk, n, bs=BLOCK):
    """n blocks of bs bytes from block number blk: each is (tag, its block
    number) as two little-endian u64, repeated."""
    return b"".join(struct.pack("<QQ", tag, blk + i) * (bs // 16) for i in range(n))


def block_is(blk, tag, b, bs=BLOCK):
    """Is blk exactly block number b written with tag?"""
    return blk == struct.pack("<QQ", tag, b) * (bs // 16)


def crash_tag(seed, cycle, seq):
    """The tag of crash_tracking's write seq in cycle of a run with seed."""
    return (seed << 40) | (cycle << 24) | seq
