#!/usr/bin/env python3
"""Layer records by hand, for tests/layerstore.sh, until cfs-pack writes them.

layer-records.py CFS_PACK OCI_DIR TAG WORK STORE [--skip N]...

For each layer i of the image OCI_DIR:TAG (one manifest): extracts the
layer into WORK/layer<i> in overlay form (.wh.NAME -> character device 0:0
NAME, .wh..wh..opq -> trusted.overlay.opaque=y on its directory), packs
that tree into STORE with `CFS_PACK -q --tag layer<i>`, and writes
STORE/layers/<hex of the compressed digest> (lib/format/layer.h) naming
that image, the diff_id (checked while decompressing), the sizes and the
compression.  --skip N leaves layer N's record out (the fallback).
Prints one line per layer: "layer I DIGEST SIZE DIFF_ID IMAGE|skipped".
Runs as root (mknod, chown, trusted.* xattrs).
"""
import gzip
import hashlib
import json
import os
import subprocess
import sys
import tarfile

WH = ".wh."
OPQ = ".wh..wh..opq"


def blob_path(oci, dgst):
    algo, hexd = dgst.split(":", 1)
    return os.path.join(oci, "blobs", algo, hexd)


def extract_overlay(tar_path, dest):
    os.makedirs(dest)
    with tarfile.open(tar_path, "r:*") as tf:
        for m in tf:
            name = os.path.normpath(m.name.lstrip("/"))
            if name in (".", ""):
                continue
            d, base = os.path.split(name)
            if base == OPQ:
                p = os.path.join(dest, d)
                os.makedirs(p, exist_ok=True)
                os.setxattr(p, "trusted.overlay.opaque", b"y")
                continue
            if base.startswith(WH):
                p = os.path.join(dest, d, base[len(WH):])
                os.makedirs(os.path.dirname(p), exist_ok=True)
                os.mknod(p, 0o600 | 0o020000, os.makedev(0, 0))
                continue
            m.name = name
            tf.extract(m, dest, set_attrs=True, numeric_owner=True)


def main():
    args = sys.argv[1:]
    skip = set()
    while "--skip" in args:
        i = args.index("--skip")
        skip.add(int(args[i + 1]))
        del args[i:i + 2]
    pack, oci, tag, work, store = args
    index = json.load(open(os.path.join(oci, "index.json")))
    desc = [m for m in index["manifests"]
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag][0]
    man = json.load(open(blob_path(oci, desc["digest"])))
    cfg = json.load(open(blob_path(oci, man["config"]["digest"])))
    for i, (layer, diff_id) in enumerate(zip(man["layers"], cfg["rootfs"]["diff_ids"])):
        src = blob_path(oci, layer["digest"])
        h, n = hashlib.sha256(), 0
        with gzip.open(src) as g:
            for chunk in iter(lambda: g.read(1 << 20), b""):
                h.update(chunk)
                n += len(chunk)
        assert "sha256:" + h.hexdigest() == diff_id, (h.hexdigest(), diff_id)
        if i in skip:
            print(f"layer {i} {layer['digest']} {layer['size']} {diff_id} skipped")
            continue
        tree = os.path.join(work, f"layer{i}")
        extract_overlay(src, tree)
        image = subprocess.run([pack, "-q", "--tag", f"layer{i}", tree, store], check=True,
                               stdout=subprocess.PIPE, text=True).stdout.strip()
        rec = (f"cfs-layer 1\nimage {image}\ndiff_id {diff_id}\ndiff_size {n}\n"
               f"size {layer['size']}\ncompression gzip\n")
        os.makedirs(os.path.join(store, "layers"), exist_ok=True)
        with open(os.path.join(store, "layers", layer["digest"].split(":", 1)[1]), "w") as f:
            f.write(rec)
        print(f"layer {i} {layer['digest']} {layer['size']} {diff_id} {image}")


if __name__ == "__main__":
    main()
