#!/usr/bin/env python3
"""Each layer of an OCI image in overlay form, for tests/layerstore.sh: a
reference made apart from cfs-pack, by Python's tarfile.

overlay-extract.py OCI_DIR TAG WORK

For each layer i of the image OCI_DIR:TAG (one manifest): checks its
diff_id while decompressing and extracts it into WORK/layer<i> in overlay
form (.wh.NAME -> character device 0:0 NAME, .wh..wh..opq ->
trusted.overlay.opaque=y on its directory).  Prints one line per layer:
"layer I DIGEST SIZE DIFF_ID".  Runs as root (mknod, chown, trusted.*
xattrs).
"""
import gzip
import hashlib
import json
import os
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
                os.mknod(p, 0o020000, os.makedev(0, 0))  # mode 0, as c/storage makes it
                continue
            m.name = name
            tf.extract(m, dest, set_attrs=True, numeric_owner=True)
            if m.issym():
                # tarfile dates a symlink's target, not the link
                os.utime(os.path.join(dest, name), (m.mtime, m.mtime), follow_symlinks=False)


def main():
    oci, tag, work = sys.argv[1:]
    index = json.load(open(os.path.join(oci, "index.json")))
    desc = [m for m in index["manifests"]
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag][0]
    man = json.load(open(blob_path(oci, desc["digest"])))
    cfg = json.load(open(blob_path(oci, man["config"]["digest"])))
    for i, (layer, diff_id) in enumerate(zip(man["layers"], cfg["rootfs"]["diff_ids"])):
        src = blob_path(oci, layer["digest"])
        h = hashlib.sha256()
        with gzip.open(src) as g:
            for chunk in iter(lambda: g.read(1 << 20), b""):
                h.update(chunk)
        assert "sha256:" + h.hexdigest() == diff_id, (h.hexdigest(), diff_id)
        extract_overlay(src, os.path.join(work, f"layer{i}"))
        print(f"layer {i} {layer['digest']} {layer['size']} {diff_id}")


if __name__ == "__main__":
    main()
