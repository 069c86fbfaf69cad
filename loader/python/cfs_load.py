# SPDX-License-Identifier: MIT
"""cfs_load: safetensors weights into host or GPU memory, handed out by DLPack.

A ctypes binding of libcfsload (loader/cfs_load.h): no build step, nothing
imported at module import time beyond the standard library, and the library
itself is opened at first use.

    import cfs_load
    m = cfs_load.Model("model/")              # .safetensors, index.json or dir
    m = cfs_load.Model.from_image(store, image, "model.safetensors",
                                  cache_dir="/var/cache/cfs")  # direct mode
    for t in m.tensors():                     # TensorInfo: name, dtype, shape,
        print(t.name, t.dtype, t.shape)       #   nbytes, file, offset
    loaded = m.load(target="cuda", device=0)  # or target="host"
    w = torch.from_dlpack(loaded["lm_head.weight"])  # no copy
    a = numpy.from_dlpack(loaded["x"])        # host target, no copy
    weights = loaded.to_torch()               # dict name -> torch.Tensor
    print(loaded.stats())                     # dict of struct cfs_load_stats
    loaded.verify()                           # re-reads and compares

Options of load(): slot_size, slots, reads, align (bytes or "16M"),
direct_io (None: auto, True: required, False: off), staged (bool),
as_uint8 (dtype names exported as uint8, below).

Library: $CFS_LOAD_LIB, else libcfsload.so next to this file, else
ctypes.util.find_library("cfsload").

Lifetime.  A Loaded keeps its Model alive; every tensor handed to a DLPack
consumer keeps the Loaded alive until the consumer calls the deleter (the
capsule's destructor calls it only when the capsule was never consumed,
as the DLPack rules say).  Model.close() and Loaded.free() release the
memory at once when nothing uses it, else as soon as the last user is gone;
the garbage collector does the same for handles never closed.  One thread
at a time per Model (the C library's rule); the deleters may run on any
thread (they take the model's lock to free a load).

DLPack.  __dlpack__(stream=None, max_version=None, dl_device=None,
copy=None) returns a legacy "dltensor" capsule (DLManagedTensor), or a
"dltensor_versioned" one (DLManagedTensorVersioned 1.x) when the consumer
asks with max_version >= (1, 0).  __dlpack_device__() is (1, 0) for host
memory (kDLCPU) and (2, N) for CUDA device N (kDLCUDA).  The load is
complete when load() returns (the library waits for its copies), so stream
needs no synchronisation.  Data types: BOOL -> kDLBool, U* -> kDLUInt,
I* -> kDLInt, F16/F32/F64 -> kDLFloat, BF16 -> kDLBfloat, F8_E4M3 and
F8_E5M2 -> kDLFloat8_e4m3fn (10) and kDLFloat8_e5m2 (12) of DLPack 1.1.
Consumers that lack a code refuse the tensor (numpy: BF16, BOOL before
1.25, F8; torch 1.x: BOOL; torch before 2.7 or so: F8):
load(as_uint8={"F8_E4M3", "F8_E5M2", "BOOL"}) exports those 1-byte types
as uint8 instead, same bytes, and to_torch() does so by itself for a
tensor torch refuses, then views it as the torch dtype where torch has one.
Empty tensors carry their (valid) address rather than NULL: some consumers
never call the deleter of a NULL-data tensor.

Errors raise cfs_load.Error, its message the library's one-line message and
its errno the library's (positive) error number.
"""

import ctypes
import ctypes.util
import os
import threading
from collections import namedtuple
from collections.abc import Mapping

__all__ = ["Error", "Model", "Loaded", "Tensor", "TensorInfo", "DTYPES"]

# enum cfs_dtype, in order (the values are the library's ABI).
DTYPES = ("BOOL", "U8", "I8", "F8_E4M3", "F8_E5M2", "U16", "I16", "F16", "BF16",
          "U32", "I32", "F32", "U64", "I64", "F64")

# DLPack
kDLCPU, kDLCUDA = 1, 2
kDLInt, kDLUInt, kDLFloat, kDLBfloat, kDLBool = 0, 1, 2, 4, 6
kDLFloat8_e4m3fn, kDLFloat8_e5m2 = 10, 12

# dtype name -> (DLPack code, bits)
_DL_TYPES = {
    "BOOL": (kDLBool, 8), "U8": (kDLUInt, 8), "I8": (kDLInt, 8),
    "F8_E4M3": (kDLFloat8_e4m3fn, 8), "F8_E5M2": (kDLFloat8_e5m2, 8),
    "U16": (kDLUInt, 16), "I16": (kDLInt, 16), "F16": (kDLFloat, 16),
    "BF16": (kDLBfloat, 16), "U32": (kDLUInt, 32), "I32": (kDLInt, 32),
    "F32": (kDLFloat, 32), "U64": (kDLUInt, 64), "I64": (kDLInt, 64),
    "F64": (kDLFloat, 64),
}

_TARGETS = {"host": 0, "cuda": 1}
_ERR_LEN = 512


class Error(Exception):
    """A failure of the loader: args[0] is its one-line message, errno its
    error number (positive, as in errno; 0 when not from the library)."""

    def __init__(self, message, errno=0):
        super().__init__(message)
        self.errno = errno


# --- the C interface ----------------------------------------------------------

class _CTensor(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("dtype", ctypes.c_int), ("ndim", ctypes.c_uint),
                ("shape", ctypes.c_uint64 * 8), ("nbytes", ctypes.c_uint64),
                ("shard", ctypes.c_uint), ("file_off", ctypes.c_uint64)]


class _CLoadOpts(ctypes.Structure):
    _fields_ = [("target", ctypes.c_int), ("device", ctypes.c_int),
                ("slot_size", ctypes.c_size_t), ("slots", ctypes.c_uint),
                ("reads", ctypes.c_uint), ("align", ctypes.c_size_t),
                ("direct_io", ctypes.c_int), ("staged", ctypes.c_int)]


class _CLoadStats(ctypes.Structure):
    _fields_ = [("bytes", ctypes.c_uint64), ("read_bytes", ctypes.c_uint64),
                ("total_s", ctypes.c_double), ("read_s", ctypes.c_double),
                ("copy_s", ctypes.c_double), ("setup_s", ctypes.c_double),
                ("read_stalls", ctypes.c_uint64), ("copy_stalls", ctypes.c_uint64),
                ("direct_io", ctypes.c_uint), ("in_place", ctypes.c_uint),
                ("uring", ctypes.c_uint)]


_lib = None
_lib_lock = threading.RLock()


def _find_library():
    env = os.environ.get("CFS_LOAD_LIB")
    if env:
        return env
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "libcfsload.so")
    if os.path.exists(here):
        return here
    return ctypes.util.find_library("cfsload")


def _load_library():
    global _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        path = _find_library()
        if not path:
            raise Error("libcfsload not found: set CFS_LOAD_LIB to its path", 2)
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            raise Error(f"cannot open {path}: {e}", 2) from None
        vp, cp, sz, u64 = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64
        sigs = {
            "cfs_model_open": (ctypes.c_int, [cp, ctypes.POINTER(vp), cp, sz]),
            "cfs_model_open_image": (ctypes.c_int, [cp, cp, cp, cp, ctypes.POINTER(vp), cp, sz]),
            "cfs_model_open_image_trusted": (ctypes.c_int,
                                             [cp, cp, cp, cp, cp, ctypes.POINTER(vp), cp, sz]),
            "cfs_model_open_image_opts": (ctypes.c_int,
                                          [cp, cp, cp, cp, ctypes.POINTER(vp), cp, sz]),
            "cfs_model_free": (None, [vp]),
            "cfs_model_tensor_count": (sz, [vp]),
            "cfs_model_tensor": (ctypes.POINTER(_CTensor), [vp, sz]),
            "cfs_model_find": (ctypes.c_long, [vp, cp]),
            "cfs_model_file_count": (sz, [vp]),
            "cfs_model_file_path": (cp, [vp, sz]),
            "cfs_model_bytes": (u64, [vp]),
            "cfs_load_opts_init": (None, [ctypes.POINTER(_CLoadOpts)]),
            "cfs_model_load": (ctypes.c_int, [vp, ctypes.POINTER(_CLoadOpts), ctypes.POINTER(vp), cp, sz]),
            "cfs_loaded_free": (None, [vp]),
            "cfs_loaded_base": (vp, [vp]),
            "cfs_loaded_size": (u64, [vp]),
            "cfs_loaded_tensor_ptr": (vp, [vp, sz]),
            "cfs_loaded_target": (ctypes.c_int, [vp]),
            "cfs_loaded_device": (ctypes.c_int, [vp]),
            "cfs_loaded_stats": (None, [vp, ctypes.POINTER(_CLoadStats)]),
            "cfs_loaded_verify": (ctypes.c_int, [vp, cp, sz]),
            "cfs_target_probe": (ctypes.c_int, [ctypes.POINTER(_CLoadOpts), sz, ctypes.c_uint,
                                                ctypes.POINTER(ctypes.c_double), cp, sz]),
            "cfs_dtype_name": (cp, [ctypes.c_int]),
        }
        for name, (res, args) in sigs.items():
            try:
                f = getattr(lib, name)
            except AttributeError:
                raise Error(f"{path} does not export {name}", 38) from None
            f.restype, f.argtypes = res, args
        _lib = lib
        return lib


def _check(rc, err, what):
    if rc < 0:
        msg = err.value.decode("utf-8", "replace").strip() or f"{what}: {os.strerror(-rc)}"
        raise Error(msg, -rc)
    return rc


def _enc(s):
    return os.fsencode(s) if s is not None else None


def _size(v, what):
    """Bytes: an int, or a string with a K/M/G/T suffix (powers of 1024)."""
    if v is None:
        return 0
    if isinstance(v, int):
        n = v
    else:
        s = str(v).strip().upper().removesuffix("B").removesuffix("I")
        mult = 1
        if s and s[-1] in "KMGT":
            mult = 1024 ** ("KMGT".index(s[-1]) + 1)
            s = s[:-1]
        try:
            n = int(s) * mult
        except ValueError:
            raise Error(f"{what}: not a size: {v!r}", 22) from None
    if n < 0:
        raise Error(f"{what}: negative: {v!r}", 22)
    return n


# --- DLPack structures and the Python C API bits we call ---------------------

class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class _DLManagedTensor(ctypes.Structure):
    pass


_DELETER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_DLManagedTensor._fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p),
                             ("deleter", _DELETER)]


class _DLPackVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32)]


class _DLManagedTensorVersioned(ctypes.Structure):
    _fields_ = [("version", _DLPackVersion), ("manager_ctx", ctypes.c_void_p),
                ("deleter", _DELETER), ("flags", ctypes.c_uint64), ("dl_tensor", _DLTensor)]


_CAPSULE_NAME = b"dltensor"
_CAPSULE_NAME_V = b"dltensor_versioned"

# The capsule API, with the capsule passed as a plain pointer: the destructor
# runs while the capsule is being deallocated, when it must not be touched
# as a Python object (no reference taken).
_PyCapsule_New = ctypes.pythonapi.PyCapsule_New
_PyCapsule_New.restype = ctypes.py_object
_PyCapsule_New.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
_PyCapsule_IsValid = ctypes.pythonapi.PyCapsule_IsValid
_PyCapsule_IsValid.restype = ctypes.c_int
_PyCapsule_IsValid.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
_PyCapsule_GetPointer = ctypes.pythonapi.PyCapsule_GetPointer
_PyCapsule_GetPointer.restype = ctypes.c_void_p
_PyCapsule_GetPointer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]

# The managed structure and its shape and strides live in one block of C
# memory (PyMem_RawMalloc), not in a ctypes object: a consumer may call the
# deleter after this module's globals are gone (interpreter exit), and it
# reads the structure to find the deleter.  Each export has a token, kept
# in the structure's manager_ctx and as the capsule's context: _exports
# maps it to the block and the Tensor it keeps alive (hence its Loaded and
# Model).  Whichever of the deleter and the capsule destructor comes first
# releases it; a late second one finds no token (tokens are never reused,
# blocks are) and does nothing.
_PyMem_RawMalloc = ctypes.pythonapi.PyMem_RawMalloc
_PyMem_RawMalloc.restype = ctypes.c_void_p
_PyMem_RawMalloc.argtypes = [ctypes.c_size_t]
_PyMem_RawFree = ctypes.pythonapi.PyMem_RawFree
_PyMem_RawFree.restype = None
_PyMem_RawFree.argtypes = [ctypes.c_void_p]
_PyCapsule_GetContext = ctypes.pythonapi.PyCapsule_GetContext
_PyCapsule_GetContext.restype = ctypes.c_void_p
_PyCapsule_GetContext.argtypes = [ctypes.c_void_p]
_PyCapsule_SetContext = ctypes.pythonapi.PyCapsule_SetContext
_PyCapsule_SetContext.restype = ctypes.c_int
_PyCapsule_SetContext.argtypes = [ctypes.py_object, ctypes.c_void_p]

_exports = {}  # token -> (block address, Tensor)
# Re-entrant: a capsule or consumer may die, and call back here, while
# this thread holds it (garbage collection runs at any allocation).
_exports_lock = threading.RLock()
_next_token = [1]


def _release(token):
    with _exports_lock:
        entry = _exports.pop(token, None)
    if entry is not None:
        _PyMem_RawFree(entry[0])
        entry[1]._loaded._unexport()


def _deleter_body(managed, ctx_offset):
    # Called by the consumer when done, on any thread (ctypes takes the
    # GIL); never raise into C.  At interpreter exit the globals may be
    # gone: the block then leaks, as everything else does.
    try:
        if managed:
            _release(ctypes.c_void_p.from_address(managed + ctx_offset).value)
    except Exception:
        pass


@_DELETER
def _dl_deleter(managed):
    _deleter_body(managed, _DLManagedTensor.manager_ctx.offset)


@_DELETER
def _dl_deleter_v(managed):
    _deleter_body(managed, _DLManagedTensorVersioned.manager_ctx.offset)


@_DELETER
def _capsule_destructor(capsule):
    # The capsule dies: if nobody consumed it (still named "dltensor" or
    # "dltensor_versioned"), its tensor is ours to delete.
    try:
        if _PyCapsule_IsValid(capsule, _CAPSULE_NAME) or _PyCapsule_IsValid(capsule, _CAPSULE_NAME_V):
            _release(_PyCapsule_GetContext(capsule))
    except Exception:
        pass


# The callbacks and the capsule names (PyCapsule keeps the pointer, not a
# copy) must outlive every capsule and consumer, module teardown included:
# one reference each that is never dropped.
ctypes.pythonapi.Py_IncRef.argtypes = [ctypes.py_object]
for _o in (_dl_deleter, _dl_deleter_v, _capsule_destructor, _CAPSULE_NAME, _CAPSULE_NAME_V):
    ctypes.pythonapi.Py_IncRef(_o)
del _o


def _export(tensor, versioned):
    """A new capsule for tensor, owning one export of its Loaded."""
    ndim = len(tensor.shape)
    kind = _DLManagedTensorVersioned if versioned else _DLManagedTensor
    head = ctypes.sizeof(kind)
    dims = max(1, ndim)
    size = head + 16 * dims
    addr = _PyMem_RawMalloc(size)
    if not addr:
        raise MemoryError("DLPack export")
    ctypes.memset(addr, 0, size)
    shape = (ctypes.c_int64 * dims).from_address(addr + head)
    strides = (ctypes.c_int64 * dims).from_address(addr + head + 8 * dims)
    step = 1
    for i in range(ndim - 1, -1, -1):
        shape[i] = tensor.shape[i]
        strides[i] = step
        step *= tensor.shape[i]
    managed = kind.from_address(addr)
    dl = managed.dl_tensor
    # Empty tensors too get their (valid) address: some consumers never
    # call the deleter of a NULL-data tensor.
    dl.data = tensor.ptr or None
    dl.device = _DLDevice(*tensor.__dlpack_device__())
    dl.ndim = ndim
    dl.dtype = _DLDataType(tensor._dl_code, tensor._dl_bits, 1)
    dl.shape = ctypes.cast(addr + head, ctypes.POINTER(ctypes.c_int64))
    dl.strides = ctypes.cast(addr + head + 8 * dims, ctypes.POINTER(ctypes.c_int64))
    dl.byte_offset = 0
    if versioned:
        # The F8 codes came with DLPack 1.1.
        managed.version = _DLPackVersion(1, 1 if tensor._dl_code >= kDLFloat8_e4m3fn else 0)
        managed.flags = 0
    # The deleter set as an address: a ctypes callback object assigned to
    # the field would be kept in managed's _objects and die with it.
    deleter = _dl_deleter_v if versioned else _dl_deleter
    ctypes.c_void_p.from_address(addr + kind.deleter.offset).value = \
        ctypes.cast(deleter, ctypes.c_void_p).value
    with _exports_lock:
        token = _next_token[0]
        _next_token[0] += 1
        _exports[token] = (addr, tensor)
    managed.manager_ctx = token
    tensor._loaded._export()
    try:
        cap = _PyCapsule_New(addr, _CAPSULE_NAME_V if versioned else _CAPSULE_NAME,
                             ctypes.cast(_capsule_destructor, ctypes.c_void_p))
        _PyCapsule_SetContext(cap, token)
    except BaseException:
        _release(token)
        raise
    return cap


# --- the Python API -------------------------------------------------------------

TensorInfo = namedtuple("TensorInfo", "name dtype shape nbytes file offset")


class Model:
    """A parsed model: Model(path) for a .safetensors file, an index.json or
    a directory; Model.from_image(store, image, path, cache_dir, trust) reads the
    file straight from a cfs image (direct mode, no FUSE), with the store
    options of cfs-mount as keywords too (deadline=MS, retries=N,
    max_inflight=N, ca_file=FILE, cache_size=SIZE, mem_cache=SIZE)."""

    def __init__(self, path, *, _handle=None):
        self._lib = _load_library()
        self._h = None
        self._closed = False
        self._live = 0  # Loaded handles not yet freed
        self._lock = threading.RLock()
        if _handle is not None:
            self._h = _handle
            return
        h = ctypes.c_void_p()
        err = ctypes.create_string_buffer(_ERR_LEN)
        _check(self._lib.cfs_model_open(_enc(os.fspath(path)), ctypes.byref(h), err, _ERR_LEN),
               err, f"cfs_model_open {path}")
        self._h = h

    @classmethod
    def from_image(cls, store, image, path, cache_dir=None, trust=None, **options):
        lib = _load_library()
        h = ctypes.c_void_p()
        err = ctypes.create_string_buffer(_ERR_LEN)
        opts = []
        for key, value in (("cache", cache_dir), ("trust", trust), *options.items()):
            if value is None or value is False:
                continue
            if value is True:
                opts.append(key)
                continue
            value = str(os.fspath(value) if isinstance(value, os.PathLike) else value)
            if "," in value:
                raise Error(f"from_image: {key}={value!r}: a value may not hold a comma", 22)
            opts.append(f"{key}={value}")
        _check(lib.cfs_model_open_image_opts(
                   _enc(os.fspath(store)), _enc(image), _enc(path), _enc(",".join(opts)),
                   ctypes.byref(h), err, _ERR_LEN),
               err, f"cfs_model_open_image {store} {image} {path}")
        return cls(None, _handle=h)

    def _handle(self):
        if self._h is None or self._closed:
            raise Error("the model is closed", 9)
        return self._h

    def __len__(self):
        return self._lib.cfs_model_tensor_count(self._handle())

    @property
    def nbytes(self):
        """Sum of the tensors' bytes."""
        return self._lib.cfs_model_bytes(self._handle())

    def files(self):
        """The model's files (shards), in order."""
        h = self._handle()
        return [os.fsdecode(self._lib.cfs_model_file_path(h, i))
                for i in range(self._lib.cfs_model_file_count(h))]

    def tensors(self):
        """TensorInfo (name, dtype string, shape tuple, nbytes, file index,
        absolute byte offset in that file) of every tensor, in file order."""
        h = self._handle()
        out = []
        for i in range(self._lib.cfs_model_tensor_count(h)):
            t = self._lib.cfs_model_tensor(h, i).contents
            out.append(TensorInfo(t.name.decode("utf-8", "replace"),
                                  DTYPES[t.dtype] if 0 <= t.dtype < len(DTYPES) else str(t.dtype),
                                  tuple(t.shape[k] for k in range(t.ndim)),
                                  t.nbytes, t.shard, t.file_off))
        return out

    def _opts(self, target, device, slot_size=None, slots=None, reads=None, align=None,
              direct_io=None, staged=False):
        o = _CLoadOpts()
        self._lib.cfs_load_opts_init(ctypes.byref(o))
        if target not in _TARGETS:
            raise Error(f"target: {target!r}, not 'host' or 'cuda'", 22)
        o.target = _TARGETS[target]
        o.device = int(device)
        if slot_size is not None:
            o.slot_size = _size(slot_size, "slot_size")
        if slots is not None:
            o.slots = int(slots)
        if reads is not None:
            o.reads = int(reads)
        if align is not None:
            o.align = _size(align, "align")
        o.direct_io = -1 if direct_io is None else (1 if direct_io else 0)
        o.staged = 1 if staged else 0
        return o

    def load(self, target="host", device=0, *, as_uint8=(), **opts):
        """Loads every tensor into one allocation of target ("host" or
        "cuda", CUDA device `device`).  opts: slot_size, slots, reads,
        align, direct_io, staged.  Returns a Loaded (a mapping name ->
        Tensor)."""
        as_uint8 = frozenset(as_uint8)
        wide = [d for d in as_uint8 if d not in DTYPES or _DL_TYPES[d][1] != 8]
        if wide:
            raise Error(f"as_uint8: {', '.join(map(str, wide))}: not a 1-byte dtype", 22)
        unknown = set(opts) - {"slot_size", "slots", "reads", "align", "direct_io", "staged"}
        if unknown:
            raise TypeError(f"load() got unknown options: {', '.join(sorted(unknown))}")
        o = self._opts(target, device, **opts)
        h = self._handle()
        out = ctypes.c_void_p()
        err = ctypes.create_string_buffer(_ERR_LEN)
        # Under the model's lock: a consumer's deleter may free another
        # load of this model on another thread meanwhile (ctypes lets go
        # of the GIL during the call), and the C model is one thread's.
        with self._lock:
            _check(self._lib.cfs_model_load(h, ctypes.byref(o), ctypes.byref(out), err, _ERR_LEN),
                   err, "cfs_model_load")
            self._live += 1
        return Loaded(self, out, as_uint8)

    def probe(self, target="host", device=0, size=256 << 20, reps=4):
        """Bytes/s of the target's pinned host-to-device copies (host: memcpy)."""
        return probe(target, device, size, reps)

    def _load_gone(self):
        with self._lock:
            self._live -= 1
        self._maybe_free()

    def _maybe_free(self):
        with self._lock:
            if not (self._closed and self._live == 0 and self._h is not None):
                return
            h, self._h = self._h, None
            self._lib.cfs_model_free(h)

    def close(self):
        """Frees the model now, or when its last Loaded is gone."""
        self._closed = True
        self._maybe_free()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        # Normally the last Loaded is gone when this runs (each holds a
        # reference); the garbage collector may still finalize a model
        # before its loads when they die together: they free it then.
        try:
            self._closed = True
            self._maybe_free()
        except Exception:
            pass


def probe(target="host", device=0, size=256 << 20, reps=4):
    """Pinned host-to-device bandwidth of the target in bytes/s (host: memcpy)."""
    lib = _load_library()
    o = _CLoadOpts()
    lib.cfs_load_opts_init(ctypes.byref(o))
    if target not in _TARGETS:
        raise Error(f"target: {target!r}, not 'host' or 'cuda'", 22)
    o.target, o.device = _TARGETS[target], int(device)
    bw = ctypes.c_double()
    err = ctypes.create_string_buffer(_ERR_LEN)
    _check(lib.cfs_target_probe(ctypes.byref(o), _size(size, "size"), int(reps), ctypes.byref(bw),
                                err, _ERR_LEN), err, "cfs_target_probe")
    return bw.value


class Loaded(Mapping):
    """The loaded tensors of one Model.load(): a mapping name -> Tensor."""

    def __init__(self, model, handle, as_uint8):
        self._model = model
        self._lib = model._lib
        self._h = handle
        self._as_uint8 = as_uint8
        self._lock = threading.RLock()
        self._exported = 0
        self._freed = False
        self._infos = model.tensors()
        self._index = {t.name: i for i, t in enumerate(self._infos)}
        self.target = "cuda" if self._lib.cfs_loaded_target(handle) == 1 else "host"
        self.device = self._lib.cfs_loaded_device(handle)

    def _handle(self):
        if self._h is None or self._freed:
            raise Error("the load is freed", 9)
        return self._h

    def __getitem__(self, name):
        # A new Tensor each time: tensors refer to the load, never the
        # reverse, so that plain reference counting frees it.
        i = self._index[name]  # KeyError when absent, as a mapping should
        return self._tensor(name, self._infos[i].dtype in self._as_uint8)

    def _tensor(self, name, as_uint8):
        i = self._index[name]
        ptr = self._lib.cfs_loaded_tensor_ptr(self._handle(), i)
        return Tensor(self, self._infos[i], ptr or 0, as_uint8)

    def __iter__(self):
        return iter(self._index)

    def __len__(self):
        return len(self._index)

    @property
    def base(self):
        """Address of the allocation (device pointer for cuda)."""
        return self._lib.cfs_loaded_base(self._handle()) or 0

    @property
    def nbytes(self):
        """Size of the allocation (tensors and their alignment)."""
        return self._lib.cfs_loaded_size(self._handle())

    def stats(self):
        """The figures of the load (struct cfs_load_stats) as a dict."""
        s = _CLoadStats()
        self._lib.cfs_loaded_stats(self._handle(), ctypes.byref(s))
        return {name: getattr(s, name) for name, _ in _CLoadStats._fields_}

    def verify(self):
        """Reads every tensor again from the source and compares it with the
        target's bytes; raises Error naming the first difference."""
        err = ctypes.create_string_buffer(_ERR_LEN)
        with self._model._lock:
            _check(self._lib.cfs_loaded_verify(self._handle(), err, _ERR_LEN), err, "cfs_loaded_verify")

    def to_torch(self):
        """dict name -> torch.Tensor, each a view of this load (no copy).
        A 1-byte tensor whose DLPack code torch lacks comes as uint8, viewed
        as the torch dtype where torch has it (torch.bool, float8_*)."""
        import torch  # only here: the module itself needs no torch
        views = {"BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
        out = {}
        for name in self:
            t = self[name]
            try:
                out[name] = torch.from_dlpack(t)
                continue
            except (RuntimeError, BufferError, TypeError):
                if t._dl_bits != 8 or t._dl_code == kDLUInt:
                    raise
            u = torch.from_dlpack(self._tensor(name, True))
            dt = getattr(torch, views.get(t.dtype, ""), None)
            out[name] = u.view(dt) if dt is not None else u
        return out

    def _export(self):
        with self._lock:
            self._exported += 1

    def _unexport(self):
        with self._lock:
            self._exported -= 1
        self._maybe_free()

    def _maybe_free(self):
        with self._lock:
            if not (self._freed and self._exported == 0 and self._h is not None):
                return
            h, self._h = self._h, None
        with self._model._lock:
            self._lib.cfs_loaded_free(h)
        self._model._load_gone()

    def free(self):
        """Frees the allocation now, or when the last DLPack consumer is done."""
        self._freed = True
        self._maybe_free()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.free()

    def __del__(self):
        # Every export holds a reference to its Tensor and so to this: when
        # this runs, no consumer is left.
        try:
            if self._h is not None:
                h, self._h = self._h, None
                with self._model._lock:
                    self._lib.cfs_loaded_free(h)
                self._model._load_gone()
        except Exception:
            pass


class Tensor:
    """One loaded tensor: name, dtype (safetensors name), shape, nbytes,
    ptr (host or device address); a DLPack producer."""

    def __init__(self, loaded, info, ptr, as_uint8=False):
        self._loaded = loaded
        self.name, self.dtype, self.shape, self.nbytes = info.name, info.dtype, info.shape, info.nbytes
        self.ptr = ptr
        code, bits = _DL_TYPES[self.dtype]
        if as_uint8 and bits == 8:
            code = kDLUInt
        self._dl_code, self._dl_bits = code, bits

    def __repr__(self):
        return (f"<cfs_load.Tensor {self.name} {self.dtype}{list(self.shape)} "
                f"{self._loaded.target}:{self._loaded.device} 0x{self.ptr:x}>")

    def __dlpack_device__(self):
        if self._loaded.target == "cuda":
            return (kDLCUDA, self._loaded.device)
        return (kDLCPU, 0)

    def __dlpack__(self, stream=None, max_version=None, dl_device=None, copy=None):
        self._loaded._handle()  # raises when freed
        if copy:
            raise BufferError("cfs_load tensors are exported without a copy (copy=True asked)")
        if dl_device is not None and tuple(dl_device) != self.__dlpack_device__():
            raise BufferError(f"tensor is on {self.__dlpack_device__()}, {tuple(dl_device)} asked")
        versioned = max_version is not None and tuple(max_version)[0] >= 1
        return _export(self, versioned)

    def tobytes(self):
        """The tensor's bytes (host target; a copy)."""
        if self._loaded.target != "host":
            raise Error(f"{self.name}: tobytes() needs the host target", 22)
        self._loaded._handle()
        return ctypes.string_at(self.ptr, self.nbytes) if self.nbytes else b""
