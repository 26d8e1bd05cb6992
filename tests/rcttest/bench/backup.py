"""bench/backup.sh's helpers: filling and rewriting the disk, and the table.

  fill URI FRACTION          - random data in 1 MiB pieces over FRACTION of the disk
  rewrite URI FRACTION       - rewrite FRACTION of the disk, spread out, 64 KiB at a time
  table SIZE BYTES RCT REF INC RESTORE CONVERT DIRECT - markdown: medians of the round times, ratios
"""
import os
import statistics
import sys

import nbd

from rcttest import cli

MIB = 1 << 20


def _connect(uri):
    h = nbd.NBD()
    h.connect_uri(uri)
    return h


def fill(argv):
    h = _connect(argv[1])
    step = int(MIB / float(argv[2]))
    for off in range(0, h.get_size(), step):
        h.pwrite(os.urandom(MIB), off)
    h.flush()
    h.shutdown()


def rewrite(argv):
    h = _connect(argv[1])
    size = h.get_size()
    piece = 64 << 10
    count = int(size * float(argv[2])) // piece
    stride = size // count
    for i in range(count):
        h.pwrite(os.urandom(piece), i * stride)
    h.flush()
    h.shutdown()


def table(argv):
    size, nbytes = argv[1], int(argv[2])
    rct = [float(x) for x in argv[3].split()]
    ref = [float(x) for x in argv[4].split()]
    inc = float(argv[5])
    data = nbytes / 2
    m_rct, m_ref = statistics.median(rct), statistics.median(ref)
    print("| %s disk, %d MiB of data, %d rounds | median s | MiB/s of data | rounds (s) |" %
          (size, data / MIB, len(rct)))
    print("|---|---|---|---|")
    print("| rct-backup full | %.2f | %.0f | %s |" % (m_rct, data / MIB / m_rct, " ".join("%.2f" % x for x in rct)))
    print("| nbdcopy into the same qemu-nbd sink | %.2f | %.0f | %s |" %
          (m_ref, data / MIB / m_ref, " ".join("%.2f" % x for x in ref)))
    print("| ratio (nbdcopy time / rct-backup time; bar >= 0.9) | %.2f | | |" % (m_ref / m_rct))
    print("| rct-backup inc, 1%% of the disk rewritten | %.2f | | %.1f%% of the full's median (bar <= 3%%) |" %
          (inc, 100 * inc / m_rct))
    res = [float(x) for x in argv[6].split()]
    conv = [float(x) for x in argv[7].split()]
    m_res, m_conv = statistics.median(res), statistics.median(conv)
    print("| rct-backup restore, 10-point chain | %.2f | | %s |" % (m_res, " ".join("%.2f" % x for x in res)))
    print("| qemu-img convert -O raw of the same chain (+ sync) | %.2f | | %s |" %
          (m_conv, " ".join("%.2f" % x for x in conv)))
    direct = [float(x) for x in argv[8].split()]
    m_direct = statistics.median(direct)
    print("| qemu-img convert -t none (no page cache) | %.2f | | %s |" %
          (m_direct, " ".join("%.2f" % x for x in direct)))
    print("| ratio (convert time / restore time; bar >= 1.0) | %.2f | | |" % (m_conv / m_res))
    print("| ratio (convert -t none time / restore time) | %.2f | | |" % (m_direct / m_res))
    sys.stdout.flush()


if __name__ == "__main__":
    cli.run({"fill": fill, "rewrite": rewrite, "table": table})
