"""Consistency groups under a causal writer (docs/architecture.md,
"Consistency groups").

One writer writes sequence number k into a 4 KiB block of disk k % 3 (each
disk has one such block, overwritten), waiting for each write to complete
before it issues the next: write k is issued after write k - 1 completed, on
another disk. Meanwhile a second writer per disk keeps random 4 KiB writes
going elsewhere on it, and group snapshots of the three disks are cut one
after another. Each cut must hold a causally closed prefix: if it holds
write m (the largest it holds) it holds every write before, so its three
blocks read exactly the last writes of each disk up to m (m, m - 1, m - 2 in
some order), and m is at least the last write acknowledged before the call.

  causal NBD_SOCK CTL_SOCK CUTS DISK... - fails (exit 1) on the first cut
                                         that breaks the rule
"""
import json
import random
import struct
import sys
import threading
import time

import nbd

from rcttest import cli, control

BLOCK = 4096
SEQ_AT = 0           # the sequence block's offset in each disk
LOAD_FROM = 1 << 20  # the random writers stay above it


def _uri(sock, export):
    return f"nbd+unix:///{export}?socket={sock}"


def _handle(sock, export):
    h = nbd.NBD()
    h.connect_uri(_uri(sock, export))
    return h


class _Writers:
    def __init__(self, sock, disks):
        self.disks = disks
        self.acked = 0
        self.random_writes = 0
        self.stop = threading.Event()
        self.error = None
        self.seq = [_handle(sock, d) for d in disks]
        self.load = [_handle(sock, d) for d in disks]
        self.threads = [threading.Thread(target=self._causal)]
        self.threads += [threading.Thread(target=self._random, args=(h,)) for h in self.load]

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join()
        if self.error:
            raise self.error

    def _causal(self):
        k = 0
        try:
            while not self.stop.is_set():
                k += 1
                block = struct.pack("<Q", k) + bytes(BLOCK - 8)
                self.seq[k % len(self.disks)].pwrite(block, SEQ_AT)
                self.acked = k
        except Exception as e:  # the main thread reports it
            self.error = e

    def _random(self, h):
        rng = random.Random()
        size = h.get_size()
        try:
            while not self.stop.is_set():
                off = rng.randrange(LOAD_FROM // BLOCK, size // BLOCK) * BLOCK
                h.pwrite(rng.randbytes(BLOCK), off)
                self.random_writes += 1
        except Exception as e:
            self.error = e


def _held(sock, disk, snap):
    h = _handle(sock, f"{disk}@{snap}")
    try:
        return struct.unpack("<Q", h.pread(8, SEQ_AT))[0]
    finally:
        h.shutdown()


def _check(disks, values, before):
    """None when the cut is a causally closed prefix, else why not."""
    n = len(disks)
    m = max(values)
    if m < before:
        return f"holds writes up to {m}, but write {before} was acknowledged before the call"
    for i, v in enumerate(values):
        want = m - ((m - i) % n)  # the last write to disk i up to m
        if want < 1:
            want = 0
        if v != want:
            return (f"holds write {m} but disk {disks[i]} reads {v}, not {want} "
                    f"(every write before {m} completed before {m} was issued)")
    return None


def causal(argv):
    sock, ctl, cuts, disks = argv[1], argv[2], int(argv[3]), argv[4:]
    w = _Writers(sock, disks)
    w.start()
    try:
        seen = []
        for i in range(cuts):
            while w.acked < (seen[-1] if seen else 0) + 3 * len(disks) and not w.error:
                time.sleep(0.001)  # some causal writes between two cuts
            before = w.acked
            status, data = control.call(ctl, "POST", "/v1/groups/snapshots",
                                        {"name": f"g{i}", "disks": disks})
            if status != 201:
                print(f"group cut {i}: HTTP {status}: {data}", file=sys.stderr)
                return 1
            held_ns = json.loads(data)["held_ns"]
            values = [_held(sock, d, f"g{i}") for d in disks]
            why = _check(disks, values, before)
            if why:
                print(f"group cut g{i}: {why}; blocks {values}", file=sys.stderr)
                return 1
            seen.append(max(values))
            print(f"   g{i}: blocks {values}, acknowledged before the call {before}, "
                  f"writes held {held_ns // 1000} us at most")
    finally:
        w.finish()
    total = w.acked
    if len(set(seen)) != cuts:
        print(f"the causal writer did not move between every two cuts: {seen}", file=sys.stderr)
        return 1
    print(f"   {cuts} group cuts, each a causally closed prefix; {total} causal writes, "
          f"{w.random_writes} random ones beside them")
    return 0


if __name__ == "__main__":
    cli.run({"causal": causal})
