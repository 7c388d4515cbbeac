"""Three calls of GDAL's virtual file system that rasterio does not wrap, made through ``ctypes`` on the GDAL
library rasterio itself loaded (so its settings, credentials and caches are the ones rasterio uses):

    headers("/vsis3/bucket/key")   # the object's HTTP headers (ETag, Last-Modified, Content-Length), or None
    read("/vsis3/bucket/item.json")  # a small file's bytes, or None
    forget("/vsicurl/https://…")   # drop GDAL's cached blocks and size of that file (VSICurlPartialClearCache)

Where that library cannot be told apart (a platform without ``/proc/self/maps``; several GDALs, none of them
rasterio's wheel's), ``headers`` and ``read`` answer None and ``forget`` does nothing.
"""
from __future__ import annotations

import ctypes
import functools
import os


@functools.lru_cache(maxsize=1)
def _gdal():
    import rasterio._base  # noqa: F401 -- loads rasterio's GDAL into this process

    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            paths = {line.split(maxsplit=5)[5].strip() for line in f if len(line.split(maxsplit=5)) == 6}
    except OSError:
        return None
    found = sorted(p for p in paths if os.path.basename(p).startswith("libgdal") and ".so" in p)
    # other wheels bring GDALs of their own (pyogrio.libs, fiona.libs): rasterio's is in rasterio.libs, or else
    # the one library no other wheel brought (a system or conda GDAL)
    own = [p for p in found if os.path.basename(os.path.dirname(p)) == "rasterio.libs"]
    shared = [p for p in found if not os.path.dirname(p).endswith(".libs")]
    found = own or (shared if len(shared) == 1 else [])
    if not found:
        return None
    lib = ctypes.CDLL(found[0])  # already loaded: dlopen hands back the same library
    lib.VSIGetFileMetadata.restype = ctypes.POINTER(ctypes.c_char_p)
    lib.VSIGetFileMetadata.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p]
    lib.CSLDestroy.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
    lib.VSICurlPartialClearCache.argtypes = [ctypes.c_char_p]
    lib.VSIIngestFile.restype = ctypes.c_int
    lib.VSIIngestFile.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.POINTER(ctypes.c_ubyte)),
                                  ctypes.POINTER(ctypes.c_uint64), ctypes.c_int64]
    lib.VSIFree.argtypes = [ctypes.c_void_p]
    return lib


def headers(vsi: str) -> dict[str, str] | None:
    lib = _gdal()
    if lib is None:
        return None
    lines = lib.VSIGetFileMetadata(vsi.encode(), b"HEADERS", None)
    if not lines:
        return None
    out, i = {}, 0
    try:
        while lines[i] is not None:
            key, _, value = lines[i].decode("utf-8", "replace").partition("=")
            out[key] = value
            i += 1
    finally:
        lib.CSLDestroy(lines)
    return out


def read(vsi: str, limit: int = 64 << 20) -> bytes | None:
    lib = _gdal()
    if lib is None:
        return None
    buf, size = ctypes.POINTER(ctypes.c_ubyte)(), ctypes.c_uint64()
    if not lib.VSIIngestFile(None, vsi.encode(), ctypes.byref(buf), ctypes.byref(size), limit):
        return None
    try:
        return ctypes.string_at(buf, size.value)
    finally:
        lib.VSIFree(buf)


def forget(vsi: str) -> None:
    lib = _gdal()
    if lib is not None and vsi.startswith("/vsi"):
        lib.VSICurlPartialClearCache(vsi.encode())
