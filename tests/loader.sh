#!/usr/bin/env bash
# cfs-load end to end: generated models (mixed, sharded, odd/zero, a tensor bigger than the ring) loaded and verified in every I/O mode, bytes checked against the file by an independent reader and handed out by DLPack without a copy, direct mode from a local and an HTTP store and through a cfs mount, corrupt inputs refused with one line, and the CUDA target.
#
# Env (tests/meson.build): CFS_LOAD, CFS_MKMODEL, CFS_LOAD_LIB, CFS_PACK,
# CFS_MOUNT, CFS_SRCDIR; CFS_PYTHON (default /usr/bin/python3: Debian's,
# with numpy) for the DLPack part, skipped without numpy.  Without root or
# FUSE the mount part is skipped, without nginx the HTTP part (under
# CI=true their absence fails).  With a GPU (nvidia-smi works) the CUDA
# target loads and verifies; without one it must fail cleanly.
set -euo pipefail

source "$(dirname "$0")/lib.sh"

: "${CFS_LOAD:?}" "${CFS_MKMODEL:?}" "${CFS_LOAD_LIB:?}" "${CFS_PACK:?}" "${CFS_MOUNT:?}"
srcdir=${CFS_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
PY=${CFS_PYTHON:-/usr/bin/python3}
[ -x "$PY" ] || PY=$(command -v python3 || true)
[ -n "$PY" ] || skip "no python3 (the test reads safetensors headers with it)"

make_workdir loader
cd "$W"

# load NAME ARGS...: cfs-load --json ARGS, must exit 0; the JSON in
# $W/NAME.json, stderr in $W/NAME.err.
load() {
	local name=$1 rc=0
	shift
	timeout 120 "$CFS_LOAD" --json "$@" >"$W/$name.json" 2>"$W/$name.err" || rc=$?
	[ "$rc" -eq 0 ] || fail "cfs-load $* exited $rc: $(head -n 3 "$W/$name.err")"
	grep -q '^{.*}$' "$W/$name.json" || fail "cfs-load --json $*: no JSON object: $(head -c 300 "$W/$name.json")"
}

# model_bytes MODEL: the sum of the tensors' bytes, read from the headers
# by a reader of its own (plain Python, not the library).
cat >"$W/stbytes.py" <<'EOF'
import json, os, struct, sys
p = sys.argv[1]
if os.path.isdir(p):
    idx = os.path.join(p, "model.safetensors.index.json")
    p = idx if os.path.exists(idx) else os.path.join(p, "model.safetensors")
if p.endswith(".json"):
    d = os.path.dirname(p)
    files = sorted(set(json.load(open(p))["weight_map"].values()))
    files = [os.path.join(d, f) for f in files]
else:
    files = [p]
total = 0
for f in files:
    with open(f, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        h = json.loads(fh.read(n))
    total += sum(v["data_offsets"][1] - v["data_offsets"][0] for k, v in h.items() if k != "__metadata__")
print(total)
EOF
model_bytes() { "$PY" "$W/stbytes.py" "$1"; }

# check_load NAME MODEL_BYTES [in_place] [direct_io]: the JSON of a load
# reports all the bytes (and, when given, the in_place / direct_io flags).
check_load() {
	local got
	got=$(stat_of "$W/$1.json" bytes)
	[ "$got" -eq "$2" ] || fail "$1: cfs-load loaded $got bytes, the model has $2"
	if [ -n "${3:-}" ]; then
		got=$(stat_of "$W/$1.json" in_place)
		[ "$got" -eq "$3" ] || fail "$1: in_place=$got, expected $3: $(cat "$W/$1.json")"
	fi
	if [ -n "${4:-}" ]; then
		got=$(stat_of "$W/$1.json" direct_io)
		[ "$got" -eq "$4" ] || fail "$1: direct_io=$got, expected $4: $(cat "$W/$1.json")"
	fi
}

# expect_fail NAME PATTERN CMD...: CMD exits 1 (not a signal, not 2) with
# one line on stderr that matches PATTERN.
expect_fail() {
	local name=$1 pat=$2 rc=0 n
	shift 2
	timeout 60 "$@" >"$W/$name.out" 2>"$W/$name.err" || rc=$?
	[ "$rc" -eq 1 ] || fail "$name: $* exited $rc, expected 1: $(head -n 3 "$W/$name.err")"
	n=$(wc -l <"$W/$name.err")
	[ "$n" -eq 1 ] || fail "$name: expected one line on stderr, got $n: $(head -n 5 "$W/$name.err")"
	grep -Eq -- "$pat" "$W/$name.err" || fail "$name: the message does not match '$pat': $(cat "$W/$name.err")"
	echo "   $name: $(cat "$W/$name.err")"
}

# --- models --------------------------------------------------------------------
step "cfs-mkmodel: single mixed, 4 shards, odd/zero, a huge tensor"
mk() {
	local dir=$1 rc=0
	shift
	# A trailing slash: OUT is a directory (made if missing), not a file.
	timeout 120 "$CFS_MKMODEL" "$@" "$W/$dir/" >"$W/mk-$dir.out" 2>&1 || rc=$?
	[ "$rc" -eq 0 ] || fail "cfs-mkmodel $* $dir exited $rc: $(tail -n 3 "$W/mk-$dir.out")"
}
mk single --size 64M --dtype mixed --seed 1
mk sharded --size 48M --shards 4 --seed 2
mk odd --size 8M --odd --zero --dtype mixed --seed 3
mk huge --size 40M --huge-tensor 24M --seed 4
[ -f single/model.safetensors ] || fail "cfs-mkmodel wrote no single/model.safetensors: $(ls single)"
[ -f sharded/model.safetensors.index.json ] || fail "cfs-mkmodel wrote no index: $(ls sharded)"
[ "$(find sharded -name '*.safetensors' | wc -l)" -eq 4 ] || fail "sharded: not 4 shards: $(ls sharded)"
declare -A mbytes
for d in single sharded odd huge; do
	mbytes[$d]=$(model_bytes "$W/$d") || fail "reading $d's headers failed"
	echo "   $d: ${mbytes[$d]} tensor bytes"
done

# --- loads in every mode ------------------------------------------------------------
# Ring for the huge model: 2 slots of 1 MiB, far below its 24 MiB tensor.
ring_opts() {
	if [ "$1" = huge ]; then echo "--slot-size 1M --slots 2"; fi
}
# O_DIRECT forced where the scratch filesystem takes it (the default picks
# buffered reads for these freshly written, cached files): aligned windows
# over odd offsets, the ring's edge cases, short reads at the end.
odirect=0
dd if=/dev/zero of="$W/odirect.probe" bs=4096 count=1 oflag=direct status=none 2>/dev/null && odirect=1
[ $odirect = 1 ] || echo "   (no O_DIRECT on $W's filesystem: --direct loads skipped)"
for d in single sharded odd huge; do
	step "host loads of $d, --verify: in place and staged, default I/O, --no-direct, --direct, no io_uring"
	# shellcheck disable=SC2046 # ring_opts: words
	for mode in inplace staged; do
		m=()
		in_place=1
		if [ $mode = staged ]; then m=(--staged); in_place=0; fi
		# Default I/O: O_DIRECT or buffered by how much of the file is in the
		# page cache, which the kernel may change at any time: in_place not
		# checked (staged always stages).
		load "$d-$mode" --target host --verify $(ring_opts $d) "${m[@]}" "$W/$d"
		check_load "$d-$mode" "${mbytes[$d]}" "$([ $mode = staged ] && echo 0)"
		load "$d-$mode-nodirect" --target host --verify --no-direct $(ring_opts $d) "${m[@]}" "$W/$d"
		check_load "$d-$mode-nodirect" "${mbytes[$d]}" "$in_place" 0
		CFS_NO_IO_URING=1 load "$d-$mode-nouring" --target host --verify $(ring_opts $d) "${m[@]}" "$W/$d"
		check_load "$d-$mode-nouring" "${mbytes[$d]}" "$([ $mode = staged ] && echo 0)"
		[ "$(stat_of "$W/$d-$mode-nouring.json" uring)" -eq 0 ] ||
			fail "$d-$mode-nouring: CFS_NO_IO_URING=1 but reads went through io_uring"
		if [ $odirect = 1 ]; then
			load "$d-$mode-direct" --target host --verify --direct $(ring_opts $d) "${m[@]}" "$W/$d"
			check_load "$d-$mode-direct" "${mbytes[$d]}" 0 1
		fi
	done
	echo "   $(cat "$W/$d-inplace.json")"
done

step "MODEL forms: the file, the directory, the index"
load single-file --verify "$W/single/model.safetensors"
check_load single-file "${mbytes[single]}"
load sharded-index --verify "$W/sharded/model.safetensors.index.json"
check_load sharded-index "${mbytes[sharded]}"
load sharded-dir --verify "$W/sharded"
check_load sharded-dir "${mbytes[sharded]}"
# A relative MODEL, from inside the directory.
(cd "$W/sharded" && timeout 60 "$CFS_LOAD" --verify model.safetensors.index.json >/dev/null 2>"$W/rel.err") ||
	fail "cfs-load of a relative index path failed: $(head -n 3 "$W/rel.err")"

step "--list: names and offsets against an independent header reader"
for d in single sharded odd; do
	timeout 60 "$CFS_LOAD" --list "$W/$d" >"$W/$d.list" 2>"$W/$d.list.err" ||
		fail "cfs-load --list $d exited $?: $(head -n 3 "$W/$d.list.err")"
done
cat >"$W/listcheck.py" <<'EOF'
# Every tensor of the headers is one --list row "name<TAB>dtype<TAB>shape
# <TAB>offset<TAB>file<TAB>file offset", offset its place in the load's
# allocation: aligned (256 by default) and overlapping no other tensor;
# file offset where the header puts its bytes.  The python part checks those
# offsets against the library's pointers and the bytes there against the
# file's.
import json, os, struct, sys
model, listing = sys.argv[1], open(sys.argv[2]).read().split("\n")
files = sorted(f for f in os.listdir(model) if f.endswith(".safetensors"))
want = {}
for f in files:
    with open(os.path.join(model, f), "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        h = json.loads(fh.read(n))
    for k, v in h.items():
        if k != "__metadata__":
            want[k] = (v["dtype"], v["shape"], v["data_offsets"][1] - v["data_offsets"][0],
                       8 + n + v["data_offsets"][0])
rows = {}
for line in listing:
    w = line.split("\t")
    if len(w) == 6 and w[0] in want:
        if w[0] in rows:
            sys.exit(f"--list has {w[0]} twice")
        rows[w[0]] = w
missing = [k for k in want if k not in rows]
if missing:
    sys.exit(f"--list misses {len(missing)} of {len(want)} tensors, e.g. {missing[:3]}")
spans = []
for k, (dt, shape, nb, foff) in want.items():
    w = rows[k]
    if w[1] != dt or json.loads(w[2]) != shape or int(w[5]) != foff:
        sys.exit(f"--list row {w} disagrees with the header: {dt} {shape} at {foff}")
    off = int(w[3])
    if off % 256:
        sys.exit(f"--list: {k} at {off}, not 256-aligned")
    if nb:
        spans.append((off, off + nb, k))
spans.sort()
for a, b in zip(spans, spans[1:]):
    if a[1] > b[0]:
        sys.exit(f"--list: {a[2]} [{a[0]}, {a[1]}) overlaps {b[2]} at {b[0]}")
print(f"   {len(want)} tensors: names, dtypes, shapes as in the headers, placed without overlap")
EOF
for d in single sharded odd; do
	"$PY" "$W/listcheck.py" "$W/$d" "$W/$d.list" || fail "--list of $d: $(head -n 5 "$W/$d.list")"
done

# --- the Python binding: bytes against the file, DLPack without a copy --------------
# py_binding ARGS...: the interpreter with the binding on its path (lib.sh).
py_binding() {
	CFS_SRCDIR=$srcdir py_cfs_load "$PY" "$@"
}
if "$PY" -c 'import numpy' 2>/dev/null; then
	step "python binding: bytes against the file, zero copy, lifetimes"
	cat >"$W/dlcheck.py" <<'EOF'
import ctypes, gc, hashlib, json, os, struct, sys, weakref
import numpy as np
import cfs_load

def header(path):
    with open(path, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        return 8 + n, json.loads(fh.read(n))

def file_bytes(path, off, n):
    with open(path, "rb") as fh:
        fh.seek(off)
        return fh.read(n)

NP = {"F16", "F32", "F64", "I8", "U8", "I16", "U16", "I32", "U32", "I64", "U64"}
checked = zero_copy = 0
for model in sys.argv[1:]:
    # cfs-load --list of the model, when there is one: its offsets are
    # where the library puts each tensor in the allocation.
    listed = {}
    if os.path.exists(model + ".list"):
        for line in open(model + ".list"):
            w = line.rstrip("\n").split("\t")
            if len(w) == 4:
                listed[w[0]] = int(w[3])
    m = cfs_load.Model(model)
    infos = m.tensors()
    files = m.files()
    # The library's table against the header read here.
    for t in infos:
        base, h = header(files[t.file])
        a, b = h[t.name]["data_offsets"]
        assert h[t.name]["dtype"] == t.dtype, (t.name, t.dtype)
        assert tuple(h[t.name]["shape"]) == t.shape, (t.name, t.shape)
        assert base + a == t.offset and b - a == t.nbytes, (t.name, t.offset, t.nbytes)
    for staged in (False, True):
        # Buffered reads: in auto mode a file out of the page cache (another
        # test's drop_caches, as readpath.sh does) is read with O_DIRECT,
        # which is never in place.
        loaded = m.load("host", staged=staged, direct_io=False)
        assert len(loaded) == len(infos)
        st = loaded.stats()
        assert st["bytes"] == m.nbytes, st
        assert st["in_place"] == (0 if staged else 1), st
        loaded.verify()
        for name, off in listed.items():
            assert loaded[name].ptr - loaded.base == off, (name, loaded[name].ptr - loaded.base, off)
        # Every tensor of small models, else the first, last and a spread.
        pick = infos if len(infos) <= 64 else infos[:4] + infos[-4:] + infos[:: max(1, len(infos) // 16)]
        for info in pick:
            t = loaded[info.name]
            want = file_bytes(files[info.file], info.offset, info.nbytes)
            assert t.tobytes() == want, f"{info.name}: bytes differ from the file"
            if info.dtype in NP and info.nbytes:
                a = np.from_dlpack(t)
                assert a.shape == info.shape, (info.name, a.shape, info.shape)
                assert a.__array_interface__["data"][0] == t.ptr, f"{info.name}: numpy got a copy"
                assert a.tobytes() == want, f"{info.name}: numpy's bytes differ from the file"
                zero_copy += 1
            checked += 1
        loaded.free()
    m.close()

# Lifetimes: an array outlives its Model and Loaded; the memory goes when
# the last consumer does.
m = cfs_load.Model(sys.argv[1])
name = next(t.name for t in m.tensors() if t.dtype in NP and t.nbytes)
loaded = m.load("host")
a = np.from_dlpack(loaded[name])
want = a.tobytes()
wl = weakref.ref(loaded)
cap = loaded[name].__dlpack__()  # never consumed: its destructor deletes
del cap
assert loaded._exported == 1, loaded._exported
m.close()
loaded.free()  # deferred: numpy still holds the tensor
del m, loaded
gc.collect()
assert wl() is not None, "the load went away under a live numpy array"
assert a.tobytes() == want
del a
gc.collect()
assert wl() is None, "the load outlived its last consumer"

# A versioned capsule (DLPack 1.x) names itself so.
m = cfs_load.Model(sys.argv[1])
loaded = m.load("host")
t = loaded[name]
cap = t.__dlpack__(max_version=(1, 0))
assert b"dltensor_versioned" in repr(cap).encode(), repr(cap)
del cap
assert loaded._exported == 0
assert t.__dlpack_device__() == (1, 0)

# torch, where installed: to_torch() is views of the load, no copies, and
# keeps it alive.
torch_note = "no torch"
try:
    import torch
except ImportError:
    torch = None
if torch is not None:
    for model in sys.argv[1:3]:
        m = cfs_load.Model(model)
        loaded = m.load("host")
        d = loaded.to_torch()
        files = m.files()
        for info in m.tensors():
            t = d[info.name]
            assert tuple(t.shape) == info.shape, (info.name, tuple(t.shape))
            if info.nbytes:
                assert t.data_ptr() == loaded[info.name].ptr, f"{info.name}: torch got a copy"
        info = max(m.tensors(), key=lambda i: i.nbytes)
        want = file_bytes(files[info.file], info.offset, info.nbytes)
        assert d[info.name].view(torch.uint8).numpy().tobytes() == want
        wl = weakref.ref(loaded)
        del loaded, m
        gc.collect()
        assert wl() is not None
        del d, t
        gc.collect()
        assert wl() is None, "the load outlived its torch tensors"
    torch_note = f"torch {torch.__version__}: views, no copies"

# Errors are cfs_load.Error with the library's message.
try:
    cfs_load.Model(os.path.join(os.path.dirname(sys.argv[1]), "no-such-model"))
    raise SystemExit("opening a missing model did not raise")
except cfs_load.Error as e:
    assert e.errno == 2 and "no-such-model" in str(e), (e.errno, str(e))
try:
    cfs_load.Model(sys.argv[1]).load("cuda")
    cuda = True
except cfs_load.Error as e:
    cuda = False
    assert "CUDA" in str(e), str(e)
print(f"   {checked} tensors equal to the file's bytes, {zero_copy} through numpy without a copy,"
      f" --list offsets where the library put them;"
      f" lifetimes, capsules and errors as DLPack says; {torch_note}; cuda here: {cuda}")
EOF
	py_binding "$W/dlcheck.py" \
		"$W/single" "$W/sharded" "$W/odd" "$W/huge" || fail "python binding check failed"
else
	echo "   (python part skipped: no numpy for $PY; apt-get install python3-numpy)"
fi

# --- corrupt inputs -------------------------------------------------------------------
step "corrupt inputs: exit 1, one line"
mkdir -p "$W/bad"
f=$W/single/model.safetensors
size=$(stat -c %s "$f")
head -c $((size - 1000)) "$f" >"$W/bad/truncated.safetensors"
expect_fail truncated 'truncated.safetensors' "$CFS_LOAD" --verify "$W/bad/truncated.safetensors"
# write_st FILE HEADER_LEN HEADER [DATA_BYTES]: an 8-byte little-endian
# length, the header, then DATA_BYTES zero bytes.
write_st() {
	"$PY" -c 'import struct, sys
n, h, d = int(sys.argv[2]), sys.argv[3].encode(), int(sys.argv[4])
open(sys.argv[1], "wb").write(struct.pack("<Q", n) + h + bytes(d))' "$@"
}
hdr='{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}'
write_st "$W/bad/hdrlen.safetensors" 1000000000 "$hdr" 16
expect_fail header-length 'hdrlen.safetensors' "$CFS_LOAD" "$W/bad/hdrlen.safetensors"
hdr='{"a":{"dtype":"Q7","shape":[4],"data_offsets":[0,16]}}'
write_st "$W/bad/dtype.safetensors" ${#hdr} "$hdr" 16
expect_fail bad-dtype 'Q7|dtype' "$CFS_LOAD" "$W/bad/dtype.safetensors"
hdr='{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}'
write_st "$W/bad/overlap.safetensors" ${#hdr} "$hdr" 24
expect_fail overlap 'overlap|"?[ab]"?' "$CFS_LOAD" "$W/bad/overlap.safetensors"
hdr='{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]'
write_st "$W/bad/json.safetensors" ${#hdr} "$hdr" 16
expect_fail bad-json 'json.safetensors' "$CFS_LOAD" "$W/bad/json.safetensors"
hdr='{"a":{"dtype":"F32","shape":[5],"data_offsets":[0,16]}}'
write_st "$W/bad/shape.safetensors" ${#hdr} "$hdr" 16
expect_fail shape-size '"?a"?' "$CFS_LOAD" "$W/bad/shape.safetensors"
expect_fail missing 'no-such' "$CFS_LOAD" "$W/bad/no-such.safetensors"
mkdir -p "$W/bad/emptydir"
expect_fail empty-dir 'emptydir' "$CFS_LOAD" "$W/bad/emptydir"
mkdir -p "$W/bad/shardgone"
cp "$W/sharded/model.safetensors.index.json" "$W/bad/shardgone/"
expect_fail shard-missing 'safetensors' "$CFS_LOAD" "$W/bad/shardgone"
# A file cut after it was parsed cannot be told from a bad disk; one cut
# before is a header that promises more than the file has: same as above.

# --- CUDA -------------------------------------------------------------------------------
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
	step "cuda: load and verify on the GPU"
	for d in single sharded huge; do
		# shellcheck disable=SC2046
		load "$d-cuda" --target cuda --device 0 --verify $(ring_opts $d) "$W/$d"
		check_load "$d-cuda" "${mbytes[$d]}" 0
	done
	echo "   $(cat "$W/single-cuda.json")"
else
	step "cuda: no GPU here, the target must say so"
	expect_fail cuda 'CUDA' "$CFS_LOAD" --target cuda --verify "$W/single"
fi

# --- direct mode: a cfs store, no FUSE ---------------------------------------------------
step "direct mode: cfs-pack the single model, load it from the store"
mkdir -p "$W/srv"
timeout 300 "$CFS_PACK" -q --tag model "$W/single" "$W/srv/store" >"$W/pack.out" 2>"$W/pack.err" ||
	fail "cfs-pack exited $?: $(tail -n 3 "$W/pack.err")"
ref=$(ref_of "$W/pack.out")
store_bytes=$(find "$W/srv/store/objects" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
echo "   $ref, objects $store_bytes bytes for a $(stat -c %s "$W/single/model.safetensors")-byte file"
load direct-local --verify --cache "$W/cache-local" "$W/srv/store" "$ref" model.safetensors
check_load direct-local "${mbytes[single]}"
load direct-tag --cache "$W/cache-local" "$W/srv/store" model model.safetensors
check_load direct-tag "${mbytes[single]}"
expect_fail direct-missing 'nope' "$CFS_LOAD" "$W/srv/store" "$ref" nope.safetensors
# The binding's direct mode: the same bytes as the file.
py_binding - "$W/srv/store" "$ref" \
	"$W/cache-py" "$W/single/model.safetensors" <<'EOF' || fail "python binding, direct mode"
import sys
import cfs_load
store, ref, cache, path = sys.argv[1:]
m = cfs_load.Model.from_image(store, ref, "model.safetensors", cache_dir=cache)
loaded = m.load("host")
loaded.verify()
data = open(path, "rb").read()
for t in m.tensors():
    assert loaded[t.name].tobytes() == data[t.offset:t.offset + t.nbytes], t.name
print(f"   binding, direct mode: {len(m)} tensors equal to the file's bytes")
EOF

have_nginx=1
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || have_nginx=0
if [ $have_nginx = 1 ]; then
	step "direct mode over HTTP (nginx), an empty cache: fetches about the model once"
	start_nginx "$W/srv"
	url=http://127.0.0.1:$NGINX_PORT/store
	load direct-http --verify --cache "$W/cache-http" "$url" "$ref" model.safetensors
	check_load direct-http "${mbytes[single]}"
	fetched=$(awk '$2 ~ /^\/store\/objects\// && $3 == 200 { s += $4 } END { print s + 0 }' "$NGINX_ACCESS_LOG")
	reqs=$(awk '$2 ~ /^\/store\/objects\// { n++ } END { print n + 0 }' "$NGINX_ACCESS_LOG")
	echo "   fetched $fetched bytes in $reqs object requests (store objects: $store_bytes bytes)"
	[ "$fetched" -ge $((store_bytes * 9 / 10)) ] ||
		fail "fetched $fetched bytes, less than the image's $store_bytes bytes of objects"
	[ "$fetched" -le $((store_bytes + store_bytes / 10 + 1048576)) ] ||
		fail "fetched $fetched bytes for $store_bytes bytes of objects: fetched twice?"
	: >"$NGINX_ACCESS_LOG"
	load direct-http-warm --verify --cache "$W/cache-http" "$url" "$ref" model.safetensors
	check_load direct-http-warm "${mbytes[single]}"
	again=$(awk '$2 ~ /^\/store\/objects\// && $3 == 200 { s += $4 } END { print s + 0 }' "$NGINX_ACCESS_LOG")
	echo "   again with the same cache: fetched $again bytes"
	[ "$again" -le $((store_bytes / 20 + 65536)) ] ||
		fail "the second load with a full cache fetched $again bytes"
	stop_nginx
	# The server gone: exit 1, no hang; the cause may come in a log line
	# before cfs-load's own last line.
	rc=0
	timeout 120 "$CFS_LOAD" --cache "$W/cache-down" "$url" "$ref" model.safetensors \
		>"$W/down.out" 2>"$W/down.err" || rc=$?
	[ "$rc" -eq 1 ] || fail "direct mode with the server down exited $rc: $(head -n 3 "$W/down.err")"
	tail -n 1 "$W/down.err" | grep -q '^cfs-load: ' || fail "direct mode, server down: $(cat "$W/down.err")"
	grep -Eqi 'connect|refused' "$W/down.err" || fail "direct mode, server down: no cause given: $(cat "$W/down.err")"
	echo "   server down: $(tr '\n' ' ' <"$W/down.err")"
	# A server that takes the connection and never answers: --deadline and
	# --retries (lib/image/open.c, as cfs-mount takes them) bound the load,
	# which would otherwise wait out 30 s per request; the same as keywords
	# of the binding, where an unknown one is refused.
	hang_port=$(free_port)
	"$PY" -c 'import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(64)
time.sleep(600)' "$hang_port" &
	PIDS+=("$!")
	wait_until 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$hang_port" 2>/dev/null ||
		fail "the silent server did not listen"
	hang=http://127.0.0.1:$hang_port/store
	rc=0
	timeout 20 "$CFS_LOAD" --deadline 1000 --retries 1 "$hang" "$ref" model.safetensors \
		>"$W/hang.out" 2>"$W/hang.err" || rc=$?
	[ "$rc" -eq 1 ] || fail "--deadline 1000 against a silent server exited $rc: $(head -n 3 "$W/hang.err")"
	grep -qi 'timed out' "$W/hang.err" || fail "--deadline: no timeout named: $(cat "$W/hang.err")"
	echo "   silent server, --deadline 1000 --retries 1: $(tail -n 1 "$W/hang.err")"
	if "$PY" -c 'import numpy' 2>/dev/null; then
		py_binding - "$hang" "$ref" <<'EOF' || fail "the binding's store options"
import sys
import cfs_load
store, ref = sys.argv[1:]
for kw, want in (({"deadline": 1000, "retries": 1}, "timed out"), ({"bogus": 1}, "unknown option")):
    try:
        cfs_load.Model.from_image(store, ref, "model.safetensors", **kw)
    except cfs_load.Error as e:
        assert want in str(e).lower(), (kw, str(e))
        print(f"   binding, {kw}: {e}")
    else:
        raise SystemExit(f"from_image({kw}) against a silent server succeeded")
EOF
	fi
else
	[ "${CI:-}" = true ] && fail "nginx is not installed (required in CI)"
	echo "   (HTTP part skipped: no nginx)"
fi

# --- through a cfs mount: O_DIRECT falls back -------------------------------------------
if [ "$(id -u)" -eq 0 ] && command -v fusermount3 >/dev/null 2>&1 && [ -c /dev/fuse ]; then
	step "through a cfs-mount of the same image"
	mount_image "$W/srv/store" "$ref" "$W/mnt" --cache "$W/cache-mount"
	load mounted --verify "$W/mnt"
	check_load mounted "${mbytes[single]}"
	load mounted-staged --verify --staged "$W/mnt/model.safetensors"
	check_load mounted-staged "${mbytes[single]}" 0
	echo "   $(cat "$W/mounted.json")"
	unmount_image "$W/mnt"
else
	[ "${CI:-}" = true ] && fail "no FUSE or not root (required in CI)"
	echo "   (mount part skipped: needs root and /dev/fuse)"
fi

echo "PASS"
