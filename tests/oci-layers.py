#!/usr/bin/env python3
"""Writes the layer tars of tests/oci.sh into DIR: oci-layers.py DIR

Every entry is spelled out here, byte for byte and in tar order, because the
order is what the test is about (an opaque marker after the new children of
its directory, a whiteout after a same-layer file of the name it removes).
No tool on the host would write such layers on purpose.  Everything is
deterministic (fixed times, owners, and pseudo-random data from a seed), so
the image digests are the same on every run.

  layer1.tar   the base: files, directories, hard links, owners
  layer2.tar   whiteouts, an opaque directory, replacements, xattrs,
               setuid/setgid files, device nodes, a fifo, a symlink
  layer3.tar   replacements back, a whiteout of a layer-2 file, an ignored
               .wh..wh. name
  arch-amd64.tar, arch-arm64.tar, arch-armv7.tar   one file, etc/arch,
               that tells the platforms of the multi-platform index apart
  evil-dotdot.tar, evil-abs.tar, evil-wh.tar   hostile layers: ../ escape,
               an absolute path that climbs out, a bare .wh. name
"""
import io
import os
import random
import sys
import tarfile

T1, T2, T3 = 1600000000, 1650000000, 1700000000

# cap_net_bind_service=ep as the kernel stores it (struct vfs_cap_data,
# revision 2, little endian): magic 0x02000000 | VFS_CAP_FLAGS_EFFECTIVE,
# then permitted/inheritable for the two 32-bit halves.  Every byte is
# ASCII, so the PAX record needs no hdrcharset=BINARY.
CAP_NET_BIND = bytes([1, 0, 0, 2, 0, 4, 0, 0] + [0] * 12)


class Layer:
    def __init__(self, path):
        self.tar = tarfile.open(path, "w", format=tarfile.PAX_FORMAT)

    def _info(self, name, kind, mode, mtime, uid=0, gid=0):
        ti = tarfile.TarInfo(name)
        ti.type = kind
        ti.mode = mode
        ti.mtime = mtime
        ti.uid, ti.gid = uid, gid
        ti.uname = ti.gname = ""
        return ti

    def dir(self, name, mode=0o755, mtime=T1, **kw):
        self.tar.addfile(self._info(name, tarfile.DIRTYPE, mode, mtime, **kw))

    def file(self, name, data, mode=0o644, mtime=T1, xattrs=None, **kw):
        if isinstance(data, str):
            data = data.encode()
        ti = self._info(name, tarfile.REGTYPE, mode, mtime, **kw)
        ti.size = len(data)
        if xattrs:
            # SCHILY.xattr.NAME, as GNU tar, Go's archive/tar (umoci,
            # skopeo, docker) and libarchive write them.
            ti.pax_headers = {"SCHILY.xattr." + k: v.decode("ascii") for k, v in xattrs.items()}
        self.tar.addfile(ti, io.BytesIO(data))

    def link(self, name, target, mtime=T1, **kw):
        ti = self._info(name, tarfile.LNKTYPE, 0o644, mtime, **kw)
        ti.linkname = target
        self.tar.addfile(ti)

    def symlink(self, name, target, mtime=T1, **kw):
        ti = self._info(name, tarfile.SYMTYPE, 0o777, mtime, **kw)
        ti.linkname = target
        self.tar.addfile(ti)

    def chardev(self, name, major, minor, mode=0o666, mtime=T1):
        ti = self._info(name, tarfile.CHRTYPE, mode, mtime)
        ti.devmajor, ti.devminor = major, minor
        self.tar.addfile(ti)

    def fifo(self, name, mode=0o600, mtime=T1):
        self.tar.addfile(self._info(name, tarfile.FIFOTYPE, mode, mtime))

    def close(self):
        self.tar.close()


def main():
    out = sys.argv[1]
    rnd = random.Random(20240501)
    # Incompressible, and over one 1 MiB chunk: several chunks per file.
    big = rnd.randbytes(1536 * 1024)

    # Layer 1: the base tree.  "./" first, as debootstrap-made base layers
    # have it: it gives the root its mode and mtime.
    l1 = Layer(os.path.join(out, "layer1.tar"))
    l1.dir("./", mtime=T1)
    l1.dir("etc/")
    l1.file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
    l1.file("etc/gone", "removed by a whiteout in layer 2\n")
    l1.file("etc/keep", "stays\n", uid=1000, gid=100, mode=0o640)
    l1.file("etc/samelayer", "layer 1\n")
    l1.dir("opq/")
    l1.file("opq/old1", "hidden by the opaque marker\n")
    l1.dir("opq/olddir/")
    l1.file("opq/olddir/deep", "hidden too\n")
    l1.file("repl", "a file in layer 1, a directory in layer 2\n")
    l1.dir("attrdir/", mode=0o755)
    l1.file("attrdir/child", "kept when layer 2 redefines attrdir\n")
    l1.dir("data/")
    l1.file("data/big", big)
    l1.link("data/big-link", "data/big")
    l1.file("data/target", "hard-linked from layer 2\n")
    l1.dir("usr/")
    l1.dir("usr/bin/")
    l1.file("usr/bin/tool", "#!/bin/sh\necho tool\n", mode=0o755)
    l1.close()

    # Layer 2.
    l2 = Layer(os.path.join(out, "layer2.tar"))
    l2.dir("etc/", mtime=T2)
    l2.file("etc/.wh.gone", "", mtime=T2)
    # A same-layer file and a whiteout of its name after it: the whiteout
    # removes layer 1's etc/samelayer only; this layer's stays.
    l2.file("etc/samelayer", "layer 2\n", mtime=T2)
    l2.file("etc/.wh.samelayer", "", mtime=T2)
    l2.file("etc/caps", "\x7fELF not really\n", mode=0o755, mtime=T2,
            xattrs={"user.cfs.test": b"hello xattr", "security.capability": CAP_NET_BIND})
    # The opaque directory: its new children come BEFORE the marker in tar
    # order and must survive it; only layer 1's children go.
    l2.dir("opq/", mode=0o750, mtime=T2)
    l2.file("opq/new1", "new in layer 2\n", mtime=T2)
    l2.dir("opq/newdir/", mtime=T2)
    l2.file("opq/newdir/x", "new in layer 2 too\n", mtime=T2)
    l2.file("opq/.wh..wh..opq", "", mtime=T2)
    # A file replaced by a directory.
    l2.dir("repl/", mode=0o711, mtime=T2)
    l2.file("repl/inside", "inside the directory that replaced a file\n", mtime=T2)
    # A directory over a directory: new attributes, children kept.
    l2.dir("attrdir/", mode=0o700, uid=1000, gid=1000, mtime=T2)
    # A hard link to a file of layer 1.
    l2.dir("data/", mtime=T2)
    l2.link("data/hl", "data/target", mtime=T2)
    l2.dir("usr/bin/", mtime=T2)
    l2.file("usr/bin/suid", "setuid\n", mode=0o4755, mtime=T2)
    l2.file("usr/bin/sgid", "setgid\n", mode=0o2755, gid=50, mtime=T2)
    l2.dir("dev/", mtime=T2)
    l2.chardev("dev/null", 1, 3, mtime=T2)
    l2.fifo("dev/fifo", mtime=T2)
    l2.symlink("lnk", "etc/passwd", mtime=T2)
    l2.close()

    # Layer 3.
    l3 = Layer(os.path.join(out, "layer3.tar"))
    # The directory of layer 2 replaced by a file again (its child goes).
    l3.file("repl", "a file again in layer 3\n", mtime=T3)
    l3.dir("etc/", mtime=T3)
    l3.file("etc/passwd", "root:x:0:0:root:/root:/bin/bash\n", mtime=T3)
    # .wh..wh. names other than the opaque marker are reserved and ignored.
    l3.file("etc/.wh..wh.other", "ignored\n", mtime=T3)
    l3.dir("usr/bin/", mtime=T3)
    l3.file("usr/bin/.wh.sgid", "", mtime=T3)
    l3.close()

    # The platforms of the multi-platform index.
    for arch in ("amd64", "arm64", "armv7"):
        la = Layer(os.path.join(out, "arch-%s.tar" % arch))
        la.dir("etc/", mtime=T3)
        la.file("etc/arch", arch + "\n", mtime=T3)
        la.close()

    # Hostile layers, each one bad entry after a good one.
    for name, bad in (("evil-dotdot.tar", "../escape-cfs-test"),
                      ("evil-abs.tar", "/abs/../../x-cfs-test"),
                      ("evil-wh.tar", "etc/.wh.")):
        le = Layer(os.path.join(out, name))
        le.file("ok", "fine\n")
        le.file(bad, "must not be written anywhere\n")
        le.close()


if __name__ == "__main__":
    main()
