#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Writes the seed corpora of fuzz-tar (tests/corpus/tar/: small valid and
hostile tar streams) and fuzz-oci-layout (tests/corpus/oci-layout/: OCI
image layouts as tars, blobs mostly named by the placeholders that target
resolves, @D:NAME@ and @S:NAME@).  Run once by hand; the files are
committed, so the corpora do not change with the python that runs the tests.

usage: tests/corpus/mk-tar.py
"""
import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import sys
import tarfile

BLOCK = 512


def member(tf, name, data=b"", **kw):
    ti = tarfile.TarInfo(name)
    for k, v in kw.items():
        setattr(ti, k, v)
    if ti.type == tarfile.REGTYPE:
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    else:
        tf.addfile(ti)


def tar(entries, fmt=tarfile.PAX_FORMAT, pax=None):
    """A tar of entries (name, data, attrs); only its two end blocks, not
    tarfile's padding to a 10 KiB record."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, pax_headers=pax or {}) as tf:
        for name, data, kw in entries:
            member(tf, name, data, **kw)
    b = buf.getvalue().rstrip(b"\0")
    b += b"\0" * (-len(b) % BLOCK)
    return b + b"\0" * (2 * BLOCK)


DIR = dict(type=tarfile.DIRTYPE, mode=0o755)
REG = dict(mode=0o644, mtime=1700000000)


def sym(target):
    return dict(type=tarfile.SYMTYPE, linkname=target)


def hard(target):
    return dict(type=tarfile.LNKTYPE, linkname=target)


def seeds():
    big = bytes((i * 7) & 0xff for i in range(5000))  # over small_max: streamed
    s = {}
    s["valid"] = tar([("etc", b"", DIR), ("etc/hosts", b"127.0.0.1 localhost\n", REG),
                      ("bin/big", big, REG), ("bin/sh", b"", sym("busybox")),
                      ("bin/busybox", b"\x7fELF", dict(mode=0o755)),
                      ("bin/ln", b"", hard("bin/busybox")), ("empty", b"", REG)])
    s["dotdot"] = tar([("a", b"x", REG), ("../evil", b"x", REG)])
    s["dotdot-inner"] = tar([("a/../../b", b"x", REG)])
    s["absolute"] = tar([("/etc/passwd", b"root:x:0:0\n", REG), ("/", b"", DIR),
                         ("./", b"", dict(type=tarfile.DIRTYPE, mode=0o700, uid=5))])
    s["symlink-loop"] = tar([("a", b"", sym("b")), ("b", b"", sym("a")),
                             ("c", b"", sym("c")), ("d", b"", sym("/" + "x" * 4000))])
    s["hardlink-missing"] = tar([("a", b"", hard("nothere"))])
    s["hardlink-later"] = tar([("a", b"", hard("b")), ("b", b"data", REG)])
    s["hardlink-self"] = tar([("a", b"x", REG), ("a", b"", hard("a")), ("b", b"", hard("a")),
                              ("a", b"", hard("b")), ("f", b"", hard("."))])
    s["hardlink-dir"] = tar([("d", b"", DIR), ("e", b"", hard("d"))])
    s["duplicates"] = tar([("f", b"one", REG), ("f", b"two", REG), ("d", b"", DIR),
                           ("d/x", b"1", REG), ("d", b"", dict(type=tarfile.DIRTYPE, mode=0o700)),
                           ("f", big, REG), ("f", b"small again", REG)])
    s["file-over-dir"] = tar([("f", b"x", REG), ("f/", b"", DIR), ("f/g", b"y", REG),
                              ("d/a/b", b"deep", REG), ("d", b"now a file", REG),
                              ("d/c", b"under a file", REG)])
    s["devices"] = tar([("dev/null", b"", dict(type=tarfile.CHRTYPE, devmajor=1, devminor=3)),
                        ("dev/sda", b"", dict(type=tarfile.BLKTYPE, devmajor=8, devminor=0)),
                        ("dev/fifo", b"", dict(type=tarfile.FIFOTYPE)),
                        ("dev/big", b"", dict(type=tarfile.CHRTYPE, devmajor=0o7777777,
                                              devminor=0o7777777))])
    long = "/".join(["d" * 100] * 3) + "/file"
    s["pax-long"] = tar([(long, b"long name", dict(
        pax_headers={"SCHILY.xattr.user.k": "v" * 300,
                     "SCHILY.xattr.security.capability": "\x01\x00\x00\x02",
                     "mtime": "-1.5", "uid": "4294967295"})),
        ("odd\nname\t\x7f\u00e9", b"", sym("t" * 200)),
        ("n" * 255, b"", hard(long))], pax={"comment": "global"})
    s["name-max"] = tar([("m" * 255, b"255", REG), ("m" * 256, b"256", REG)])
    s["gnu-long"] = tar([("g" * 150 + "/" + "h" * 150, b"gnu", REG),
                         ("l" * 120, b"", sym("x" * 300)),
                         ("k" * 200, b"", hard("g" * 150 + "/" + "h" * 150))],
                        fmt=tarfile.GNU_FORMAT)
    whole = s["valid"]
    s["truncated"] = whole[: BLOCK + 700]
    # A header that says 8 GiB, then the end of the stream.
    ti = tarfile.TarInfo("huge")
    ti.size = 8 << 30
    ti.mode = 0o644
    s["huge-size"] = ti.tobuf(tarfile.GNU_FORMAT) + b"abc" * 100
    # Two layers: the second whites out, makes a dir opaque, and a
    # runtime-private name; one whiteout names nothing.
    l1 = tar([("a/b/c", b"1", REG), ("a/keep", b"2", REG), ("o/x", b"3", REG), ("gone", big, REG)])
    l2 = tar([("a/.wh.b", b"", REG), ("o/.wh..wh..opq", b"", REG), ("o/y", b"4", REG),
              (".wh.gone", b"", REG), (".wh..wh.plnk", b"", REG)])
    s["whiteouts"] = l1 + b"\0" * (4 * BLOCK) + l2
    s["whiteout-empty"] = l1 + tar([("z/.wh.", b"", REG), ("a/.wh...", b"", REG)])
    s["gzip"] = gzip.compress(s["valid"], mtime=0)
    s["gzip-truncated"] = s["gzip"][:300]
    s["bzip2"] = bz2.compress(s["whiteouts"])
    s["xz"] = lzma.compress(s["pax-long"], format=lzma.FORMAT_XZ)
    s["empty"] = b"\0" * (2 * BLOCK)
    # As `umoci insert` writes a layer: it stops right after the last
    # member's data, no padding, no end marker (accepted, as Go reads it);
    # and one cut inside that data (refused).
    ins = tar([("opt/ins", b"", DIR), ("opt/ins/f", b"hello\n", REG)])
    s["unpadded"] = ins[: 3 * BLOCK + 6]
    s["unpadded-short"] = ins[: 3 * BLOCK + 3]
    # umoci's layer that makes the directory swap/ a file: the file, then
    # whiteouts and an opaque marker under it (nothing to hide: accepted);
    # and one under a symlink it made (refused).
    l1 = tar([("swap/x", b"1", REG), ("swap/y", b"2", REG), ("e/x", b"3", REG)])
    s["whiteout-under-file"] = l1 + tar([("swap", b"a file now", REG), ("swap/.wh.x", b"", REG),
                                         ("swap/.wh..wh..opq", b"", REG),
                                         ("e/x/.wh.z", b"", REG)])
    s["whiteout-under-symlink"] = l1 + tar([("swap", b"", sym("e")), ("swap/.wh.x", b"", REG)])
    return s


# ---- OCI layouts ----

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_LAYER_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYOUT = b'{"imageLayoutVersion": "1.0.0"}'


def sha(b):
    return hashlib.sha256(b).hexdigest()


def desc(mt, name, **kw):
    """A descriptor of placeholder blob name."""
    d = {"mediaType": mt, "digest": "@D:%s@" % name, "size": "@S:%s@" % name}
    d.update(kw)
    return d


def js(obj):
    # Sizes are placeholders: "@S:x@" must come out unquoted.
    t = json.dumps(obj, indent=1)
    for tok in set(x for x in t.split('"') if x.startswith("@S:")):
        t = t.replace('"%s"' % tok, tok)
    return t.encode()


def index(*manifests, mt=MT_INDEX):
    return js({"schemaVersion": 2, "mediaType": mt, "manifests": list(manifests)})


def manifest(config="config", layers=("layer",), mt=MT_MANIFEST, lmt=MT_LAYER):
    return js({"schemaVersion": 2, "mediaType": mt,
               "config": desc(MT_CONFIG, config),
               "layers": [desc(lmt, n) for n in layers]})


def config(*diff_ids):
    return js({"architecture": "arm64", "variant": "v8", "os": "linux",
               "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
               "rootfs": {"type": "layers", "diff_ids": list(diff_ids)}})


def layout(blobs, idx, extra=()):
    """A layout tar: oci-layout, index.json, blobs/sha256/<name> and extra
    files, each (name, bytes)."""
    files = [("oci-layout", LAYOUT, REG), ("index.json", idx, REG), ("blobs", b"", DIR),
             ("blobs/sha256", b"", DIR)]
    files += [("blobs/sha256/" + n, b, REG) for n, b in blobs.items()]
    files += [(n, b, REG) for n, b in extra]
    return tar(files, fmt=tarfile.USTAR_FORMAT)


def layouts():
    layer = tar([("bin/sh", b"#!/bin/true\n", dict(mode=0o755)), ("etc/os-release", b"ID=fuzz\n", REG)],
                fmt=tarfile.USTAR_FORMAT)
    layer2 = tar([("etc/.wh.os-release", b"", REG), ("etc/hostname", b"fuzz\n", REG)],
                 fmt=tarfile.USTAR_FORMAT)
    one = {"manifest": manifest(), "config": config("@D:layer@"), "layer": layer}
    plat = lambda arch, variant=None: {"os": "linux", "architecture": arch,
                                        **({"variant": variant} if variant else {})}
    s = {}
    s["single"] = layout(one, index(desc(MT_MANIFEST, "manifest")))
    # The same with real digests: nothing for the harness to resolve.
    cfg = config("sha256:" + sha(layer))
    man = js({"schemaVersion": 2, "mediaType": MT_MANIFEST,
              "config": {"mediaType": MT_CONFIG, "digest": "sha256:" + sha(cfg), "size": len(cfg)},
              "layers": [{"mediaType": MT_LAYER, "digest": "sha256:" + sha(layer), "size": len(layer)}]})
    idx = js({"schemaVersion": 2, "manifests": [
        {"mediaType": MT_MANIFEST, "digest": "sha256:" + sha(man), "size": len(man),
         "annotations": {"org.opencontainers.image.ref.name": "latest"}}]})
    real = {sha(man): man, sha(cfg): cfg, sha(layer): layer}
    s["single-digests"] = layout(real, idx)
    s["ref"] = layout(real, idx, [("fuzz-ref", b"latest\n")])
    s["ref-missing"] = layout(real, idx, [("fuzz-ref", b"docker.io/library/other:1\n")])
    bad = dict(real)
    bad[sha(layer)] = layer.replace(b"ID=fuzz", b"ID=fuzZ")  # same size, other bytes
    s["bad-digest-layer"] = layout(bad, idx)
    bad = dict(real)
    bad[sha(cfg)] = cfg.replace(b"arm64", b"arm65")
    s["bad-digest-config"] = layout(bad, idx)
    s["missing-blob"] = layout({}, index({"mediaType": MT_MANIFEST, "digest": "sha256:" + sha(b"none"),
                                          "size": 4}))
    s["missing-layer"] = layout({"manifest": manifest().replace(b"@D:layer@", b"sha256:" + sha(layer).encode())
                                 .replace(b"@S:layer@", str(len(layer)).encode()),
                                 "config": config("sha256:" + sha(layer))},
                                index(desc(MT_MANIFEST, "manifest")))
    s["nested"] = layout({**one, "inner": index(desc(MT_MANIFEST, "manifest", platform=plat("arm64", "v8")))},
                         index(desc(MT_INDEX, "inner")))
    multi = {**one, "m-amd64": manifest(config="c-amd64"), "c-amd64": config("@D:layer@"),
             "m-arm": manifest(), "attest": js({"schemaVersion": 2, "layers": []})}
    s["multi-platform"] = layout(multi, index(
        desc(MT_MANIFEST, "m-amd64", platform=plat("amd64")),
        desc(MT_MANIFEST, "m-arm", platform=plat("arm", "v7")),
        desc(MT_MANIFEST, "manifest", platform=plat("arm64", "v8")),
        desc(MT_MANIFEST, "attest", platform=plat("unknown", "unknown"),
             annotations={"vnd.docker.reference.type": "attestation-manifest"}),
        desc("application/vnd.example.sbom+json", "attest")))
    s["two-matches"] = layout(one, index(desc(MT_MANIFEST, "manifest", platform=plat("arm64")),
                                         desc(MT_MANIFEST, "manifest", platform=plat("arm64", "v8"))))
    docker = {"manifest": manifest(mt="application/vnd.docker.distribution.manifest.v2+json",
                                   lmt="application/vnd.docker.image.rootfs.diff.tar.gzip"),
              "config": config("sha256:" + sha(layer)), "layer": gzip.compress(layer, mtime=0)}
    s["docker-gzip"] = layout(docker, index(
        desc("application/vnd.docker.distribution.manifest.v2+json", "manifest", platform=plat("arm64", "v8")),
        mt="application/vnd.docker.distribution.manifest.list.v2+json"))
    two = {"manifest": manifest(layers=("layer", "layer2")), "config": config("@D:layer@", "@D:layer2@"),
           "layer": layer, "layer2": layer2}
    s["two-layers"] = layout(two, index(desc(MT_MANIFEST, "manifest")))
    s["media-schema1"] = layout(one, index(desc(
        "application/vnd.docker.distribution.manifest.v1+prettyjws", "manifest")))
    s["media-not-layer"] = layout({**one, "manifest": manifest(lmt="application/json")},
                                  index(desc(MT_MANIFEST, "manifest")))
    s["media-not-manifest"] = layout({**one, "manifest": manifest(mt="application/vnd.oci.image.index.v1+json")},
                                     index(desc(MT_MANIFEST, "manifest")))
    s["schema-version-1"] = layout({**one, "manifest": manifest().replace(b'"schemaVersion": 2', b'"schemaVersion": 1')},
                                   index(desc(MT_MANIFEST, "manifest")))
    deep = dict(one)
    prev = ("manifest", MT_MANIFEST)
    for i in range(6):
        deep["idx%d" % i] = index(desc(prev[1], prev[0]))
        prev = ("idx%d" % i, MT_INDEX)
    s["deep-nesting"] = layout(deep, index(desc(MT_INDEX, prev[0])))
    s["huge-size"] = layout(one, index({"mediaType": MT_MANIFEST, "digest": "@D:manifest@",
                                        "size": 1 << 62}))
    s["negative-size"] = layout(one, index({"mediaType": MT_MANIFEST, "digest": "@D:manifest@", "size": -1}))
    s["sha512"] = layout(one, index({"mediaType": MT_MANIFEST, "digest": "sha512:" + "ab" * 64, "size": 10}))
    s["diff-id-count"] = layout({**one, "config": config("@D:layer@", "@D:layer@")},
                                index(desc(MT_MANIFEST, "manifest")))
    s["no-index"] = tar([("oci-layout", LAYOUT, REG)])
    return s


def write(out, corpus):
    os.makedirs(out, exist_ok=True)
    for name, data in corpus.items():
        assert len(data) < 64 << 10, name
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    write(os.path.join(here, "tar"), seeds())
    write(os.path.join(here, "oci-layout"), layouts())


if __name__ == "__main__":
    main()
