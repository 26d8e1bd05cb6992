#!/bin/bash
# 50 snapshots under full-speed writes (issue #4), on one 64 MiB disk
# (granularity 64K):
#  - load: fio (nbd engine, randwrite 4k, iodepth 32, verify=md5 headers,
#    time based) at full speed on the first 32 MiB for the whole run;
#  - a verifiable writer (/usr/bin/python3 + libnbd, 16 requests in flight)
#    on the last 32 MiB: writes of 1-16 4 KiB blocks, each block carrying
#    (sequence number, block number), with submit and completion times;
#  - 50 cuts (control API, 30-120 ms apart), timed. Right after each cut the
#    whole export NAME@SNAP is read (under the load, while first writes are
#    copying its chunks) and its sha256 noted: the checksum at the cut.
# Then, for every snapshot:
#  (a) nbdcopy of the whole export has the sha256 noted at its cut;
#  (b) the verifiable region is exactly a point-in-time image: per block,
#      the write current at the cut (the last completed before the cut call,
#      or one overlapping it), and one instant T in the call fits all blocks;
#  (c) the fio region: every block is zeroes or a whole fio block written
#      for that offset (verify header magic, length, offset, md5 of the
#      data), and a second read gives the same bytes;
#  (d) every block that differs from the previous snapshot lies in a chunk
#      `rctctl diff d PREV SNAP` reports (change tracking agrees with the
#      snapshots), and the fio region did change between them (the load was
#      really running).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
requires fio nbdcopy sha256sum
fio --enghelp=nbd >/dev/null 2>&1 || skip "this fio has no nbd engine"
/usr/bin/python3 -c 'import nbd' 2>/dev/null || skip "/usr/bin/python3 has no nbd module (python3-libnbd)"

SIZE=$((64 << 20))
HALF=$((SIZE / 2))
GRAN=$((64 << 10))
NSNAP=${NSNAP:-50}
start_rctd
rctctl create d --size $SIZE --granularity 64K >/dev/null
U=$(uri d)
UFMT="nbd+unix:///%s?socket=$STATE/nbd.sock"

# The verifiable region starts as written blocks of tag 1 (its copies then
# hold data).
py - "$U" $HALF $SIZE <<'PY' || fail "prefilling the verifiable region failed"
import nbd, struct, sys
uri, lo, hi = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
h = nbd.NBD()
h.connect_uri(uri)
for off in range(lo, hi, 1 << 20):
    h.pwrite(b"".join(struct.pack("<QQ", 1, b) * 256 for b in range(off // 4096, (off + (1 << 20)) // 4096)), off)
h.flush()
PY

say "fio randwrite bs=4k iodepth=32 on [0, 32M) at full speed"
fio --name=load --ioengine=nbd --uri="$U" --rw=randwrite --bs=4k --iodepth=32 --size=$HALF --offset=0 \
    --time_based --runtime=240 --verify=md5 --do_verify=0 --verify_state_save=0 \
    --output="$T/fio.out" >/dev/null 2>"$T/fio.err" &
FIO_PID=$!
track_pid "$FIO_PID"
sleep 1
kill -0 "$FIO_PID" 2>/dev/null || { cat "$T/fio.err" "$T/fio.out"; fail "fio did not start"; }

say "verifiable writer on [32M, 64M) and $NSNAP cuts under the load"
cat >"$T/load.py" <<'PY'
# load.py URI_FMT CONTROL_SOCK LOG NSNAP LO HI
import hashlib, http.client, json, nbd, random, socket, struct, sys, threading, time
ufmt, ctl, logpath, nsnap, lo, hi = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
sys.setswitchinterval(0.0002)
BS, QD = 4096, 16
B0, B1 = lo // BS, hi // BS
mono = time.monotonic
rng = random.Random(4)
lines = []
stop = threading.Event()

class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=60)
        self.path = path
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)

def controller():
    try:
        for k in range(1, nsnap + 1):
            time.sleep(rng.uniform(0.03, 0.12))
            name = "s%d" % k
            c = UnixHTTP(ctl)
            s = mono()
            c.request("POST", "/v1/disks/d/snapshots", body=json.dumps({"name": name}),
                      headers={"Content-Type": "application/json"})
            r = c.getresponse()
            body = r.read()
            e = mono()
            c.close()
            if r.status != 201:
                lines.append("X cut %s: HTTP %d %s" % (name, r.status, body))
                return
            # the checksum at the cut: read the whole snapshot now, under the load
            h = nbd.NBD()
            h.connect_uri(ufmt % ("d@" + name))
            size = h.get_size()
            m = hashlib.sha256()
            for off in range(0, size, 8 << 20):
                m.update(h.pread(min(8 << 20, size - off), off))
            h.shutdown()
            lines.append("C %s %.6f %.6f %s %.6f" % (name, s, e, m.hexdigest(), mono() - e))
    except Exception as ex:
        lines.append("X controller: %s" % str(ex).replace("\n", " "))
    finally:
        stop.set()

h = nbd.NBD()
h.connect_uri(ufmt % "d")
busy = bytearray(B1)
ops = []
inflight = 0
seq = 1

def submit():
    global seq, inflight
    for _ in range(20):
        n = rng.choice((1, 1, 2, 4, 8, 16))
        b = rng.randrange(B0, B1 - n + 1)
        if not any(busy[b:b + n]):
            break
    else:
        return
    seq += 1
    tag = seq
    busy[b:b + n] = b"\x01" * n
    op = [tag, b, n, mono(), -1.0]
    def done(err, op=op, b=b, n=n):
        global inflight
        if err.value == 0:
            op[4] = mono()
        busy[b:b + n] = bytes(n)
        inflight -= 1
        return 1
    ops.append(op)
    inflight += 1
    data = b"".join(struct.pack("<QQ", tag, b + i) * (BS // 16) for i in range(n))
    h.aio_pwrite(data, b * BS, completion=done)

th = threading.Thread(target=controller)
th.start()
while not stop.is_set():
    while inflight < QD:
        submit()
    h.poll(-1)
while inflight > 0:
    h.poll(-1)
h.flush()
th.join()
with open(logpath, "w") as f:
    for l in lines:
        f.write(l + "\n")
    for op in ops:
        f.write("W %d %d %d %.6f %.6f\n" % tuple(op))
bad = [op for op in ops if op[4] < 0]
if bad:
    sys.exit("%d writes failed" % len(bad))
PY
py "$T/load.py" "$UFMT" "$STATE/control.sock" "$T/load.log" "$NSNAP" $HALF $SIZE || fail "the verifiable writer failed"
grep '^X' "$T/load.log" && fail "the cuts failed"
kill -0 "$FIO_PID" 2>/dev/null || { cat "$T/fio.err" "$T/fio.out"; fail "fio stopped before the last cut"; }
kill -INT "$FIO_PID"
wait "$FIO_PID" || true
grep -E 'IOPS=|err=' "$T/fio.out" | sed 's/^/   | /'
grep -q ' err= 0' "$T/fio.out" || { cat "$T/fio.out" "$T/fio.err"; fail "fio reported errors"; }
ncut=$(grep -c '^C ' "$T/load.log")
((ncut == NSNAP)) || fail "$ncut cuts logged, want $NSNAP"
awk '/^C / {n++; d = ($4 - $3) * 1000; s += d; if (d > m) m = d; r += $6 * 1000}
     END {printf "   ok: %d cuts, call %.1f ms on average (max %.1f ms); reading a snapshot at its cut took %.0f ms on average\n", n, s / n, m, r / n}' "$T/load.log"
ok "$(grep -c '^W ' "$T/load.log") verifiable writes"
rctctl snapshots d | tail -n 3 | sed 's/^/   | /'
daemon_alive

say "verify every snapshot"
cat >"$T/verify.py" <<'PY'
# verify.py LOG URI_FMT RCTCTL STATE SIZE GRAN IMG NAME PREV
# Checks one snapshot (read from the nbdcopy image IMG), comparing it with
# the previous one's image PREV.raw if PREV is not "-". Prints one line
#   RESULT vblocks=.. fioblocks=.. fio_written=.. changed=.. fio_changed=.. problems=..
import hashlib, json, math, nbd, os, struct, subprocess, sys
(logpath, ufmt, rctctl, state, size, gran, img, name, prev) = (
    sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]),
    sys.argv[7], sys.argv[8], sys.argv[9])
BS = 4096
NBLK = size // BS
HALFB = NBLK // 2
INF = math.inf
problems = []
def problem(m):
    problems.append(m)
    if len(problems) <= 8:
        print("   PROBLEM: %s: %s" % (name, m))

cut = None
writes = []
for line in open(logpath):
    w = line.split()
    if w[0] == "C" and w[1] == name:
        cut = (float(w[2]), float(w[3]), w[4])
    elif w[0] == "W":
        e = float(w[5])
        writes.append((int(w[1]), int(w[2]), int(w[3]), float(w[4]), INF if e < 0 else e))
if cut is None:
    sys.exit("no cut %s in the log" % name)
cs, ce, sum_at_cut = cut
data = open(img, "rb").read()
if len(data) != size:
    problem("the nbdcopy image is %d bytes, want %d" % (len(data), size))

# (a) the checksum at the cut
if hashlib.sha256(data).hexdigest() != sum_at_cut:
    problem("whole export sha256 differs from the one read right after the cut")

# (b) verifiable region
per_block = {}
for i, (tag, b, n, s, e) in enumerate(writes):
    for x in range(b, b + n):
        per_block.setdefault(x, []).append(i)
lo, hi = cs, ce
vblocks = 0
for b in range(HALFB, NBLK):
    blk = data[b * BS:(b + 1) * BS]
    t, nb = struct.unpack_from("<QQ", blk)
    if nb != b or blk != struct.pack("<QQ", t, b) * (BS // 16):
        problem("block %d holds neither a whole written block nor the prefill" % b)
        continue
    lst = per_block.get(b, [])
    cands = {}
    prev_j = -1
    for j, i in enumerate(lst):
        _, _, _, s, e = writes[i]
        if e < cs:
            prev_j = j
        elif s < ce:
            cands[writes[i][0]] = j
    cands[1 if prev_j < 0 else writes[lst[prev_j]][0]] = prev_j
    if t not in cands:
        problem("block %d reads write %d; candidates %s (cut call %.6f..%.6f)" % (
            b, t, {k: (writes[lst[j]][3:] if j >= 0 else "prefill") for k, j in cands.items()}, cs, ce))
        continue
    j = cands[t]
    if j >= 0:
        lo = max(lo, writes[lst[j]][3])
    if j + 1 < len(lst):
        hi = min(hi, writes[lst[j + 1]][4])
    vblocks += 1
if not lo < hi:
    problem("not a point-in-time image: no instant in the cut call %.6f..%.6f fits every block "
            "(latest submit seen %.6f, earliest completion of a write not seen %.6f)" % (cs, ce, lo, hi))

# (c) fio region: zeroes or whole fio blocks for their offset
zero = bytes(BS)
fio_written = 0
for b in range(HALFB):
    blk = data[b * BS:(b + 1) * BS]
    if blk == zero:
        continue
    magic, vt, ln, seed, off = struct.unpack_from("<HHIQQ", blk)
    if magic != 0xACCA or ln != BS or off != b * BS or hashlib.md5(blk[56:]).digest() != blk[40:56]:
        problem("fio block %d is not a whole fio block of its offset (magic %#x len %d offset %d)" % (b, magic, ln, off))
        continue
    fio_written += 1
h = nbd.NBD()
h.connect_uri(ufmt % ("d@" + name))
again = h.pread(HALFB * BS, 0)
if again != data[:HALFB * BS]:
    problem("a second read of the fio region differs from the first")

# (d) against the previous snapshot and change tracking
changed = fio_changed = 0
if prev != "-":
    old = open(prev + ".raw", "rb").read()
    p = subprocess.run([rctctl, "--state-dir", state, "--json", "diff", "d", prev, name, "--limit", "1000000"],
                       capture_output=True, text=True)
    if p.returncode != 0:
        problem("rctctl diff d %s %s failed: %s" % (prev, name, p.stderr.strip()))
    else:
        dirty = bytearray(size // gran)
        for e in json.loads(p.stdout)["extents"]:
            for c in range(e["offset"] // gran, (e["offset"] + e["length"] + gran - 1) // gran):
                dirty[c] = 1
        for b in range(NBLK):
            if data[b * BS:(b + 1) * BS] != old[b * BS:(b + 1) * BS]:
                changed += 1
                fio_changed += b < HALFB
                if not dirty[b * BS // gran]:
                    problem("block %d differs from %s but its chunk is not in diff %s %s" % (b, prev, prev, name))
    if fio_changed == 0:
        problem("the fio region did not change since %s: was fio writing?" % prev)
print("RESULT vblocks=%d fioblocks=%d fio_written=%d changed=%d fio_changed=%d problems=%d" % (
    vblocks, HALFB, fio_written, changed, fio_changed, len(problems)))
sys.exit(1 if problems else 0)
PY
prev=- nv=0 nfio=0 nchanged=0 nfchanged=0
for ((k = 1; k <= NSNAP; k++)); do
    rm -f "$T/s$k.raw"
    nbdcopy "$(uri "d@s$k")" "$T/s$k.raw" || fail "nbdcopy of d@s$k failed"
    rc=0
    out=$(py "$T/verify.py" "$T/load.log" "$UFMT" "$RCTCTL" "$STATE" $SIZE $GRAN "$T/s$k.raw" "s$k" "$prev" 2>&1) || rc=$?
    res=$(grep '^RESULT' <<<"$out" || true)
    [[ -n "$res" ]] || { printf '%s\n' "$out"; fail "the check of s$k crashed"; }
    ((rc == 0)) || { printf '%s\n' "$out" | grep -v '^RESULT'; fail "snapshot s$k is wrong"; }
    declare -A R=()
    for kv in ${res#RESULT }; do R[${kv%%=*}]=${kv#*=}; done
    nv=$((nv + ${R[vblocks]})) nfio=$((nfio + ${R[fio_written]}))
    nchanged=$((nchanged + ${R[changed]})) nfchanged=$((nfchanged + ${R[fio_changed]}))
    [[ "$prev" == - ]] || rm -f "$T/$prev.raw"
    prev=s$k
done
ok "$NSNAP snapshots: sha256 as at the cut; $nv verifiable blocks exact; $nfio fio blocks whole and stable; $nchanged blocks changed between neighbours ($nfchanged by fio), all inside the diffs"
daemon_alive
say "PASS"
