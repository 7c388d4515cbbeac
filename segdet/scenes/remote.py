"""Scenes read over the network: ``input=https://…/scene.tif`` by GDAL's HTTP range requests (``/vsicurl/``), and
``s3://bucket/key`` or ``gs://bucket/key`` by GDAL's own object-store drivers (``/vsis3/``, ``/vsigs/``: their
credentials are GDAL's ``AWS_*`` and ``GS_*``/``GOOGLE_*`` settings). ``/vsicurl/URL``-style names are taken too.

Predict keeps an input as a ``Path``; a URL's ``Path`` loses the second slash after the scheme (``https:/host/…``),
so ``url_of`` restores it and nothing else of the URL is changed (``inputs`` refuses a URL that would not survive).
Its journal key is the URL, its stamp (what ``resume=true`` compares) the server's ETag, Last-Modified and size,
and its outputs are named after the stem of the URL's path.

Before GDAL reads an http(s) scene one small request of segdet's own checks it (``http_probe``: a 403, a 404, a
server without range requests, a timeout: one line; 429 and 5xx retried with backoff). The GDAL settings a user
gives in the environment (``GDAL_HTTP_*``, ``CPL_VSIL_CURL_*``, ``AWS_*`` ...) apply as they are; those not given
take ``http_probe.DEFAULTS`` while a remote scene is open (``rasterio.Env``), and a read that still fails on the
network ends the run in one line (its finished tiles are journaled: ``resume=true`` continues).
"""
from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from segdet.errors import SegdetError
from segdet.files.inputs import InputKind, register
from segdet.scenes import gdal_vsi
from segdet.scenes.http_probe import (DEFAULTS, NO_RANGES, http_error, is_json, probe, request, shown,  # noqa: F401
                                      stamp_of)
from segdet.scenes.raster import SCALES, CorruptWindow, Scene, _bands, _first_line

_URL = re.compile(r"^(https?|s3|gs):/+", re.IGNORECASE)
_VSI = re.compile(r"^/vsi(curl|s3|gs)/", re.IGNORECASE)


# --- names ----------------------------------------------------------------------------------------------------
def is_remote(value) -> bool:
    """True for an http(s)://, s3:// or gs:// URL (or GDAL's /vsicurl/, /vsis3/, /vsigs/ spelling), also as a
    ``Path`` (which keeps one slash after the scheme)."""
    text = str(value)
    return bool(_URL.match(text) or _VSI.match(text))


def url_of(value) -> str:
    """The URL of a remote input given as a string, a ``Path`` or a GDAL /vsi…/ name."""
    text = str(value)
    vsi = _VSI.match(text)
    if vsi:
        rest = text[vsi.end():]
        text = rest if vsi.group(1).lower() == "curl" else f"{vsi.group(1).lower()}://{rest}"
    return _URL.sub(lambda m: f"{m.group(1).lower()}://", text, count=1)


def vsi_path(url: str) -> str:
    """GDAL's name for ``url``; a local path as it is."""
    if not is_remote(url):
        return str(url)
    url = url_of(url)
    scheme, rest = url.split("://", 1)
    return f"/vsicurl/{url}" if scheme.startswith("http") else f"/vsi{scheme}/{rest}"


class Shown(PurePosixPath):
    """A remote input as a path for messages (``str``: the URL without its query) and for its ``name``/``stem``."""

    def __str__(self) -> str:
        return url_of(super().__str__())


def ours(url: str) -> bool:
    """True where segdet makes its own HTTP request (the probe, a stamp, a small file): an http(s) URL, unless GDAL
    signs its requests (``VSICURL_PC_URL_SIGNING``: Planetary Computer), which only GDAL's own can be."""
    signing = os.environ.get("VSICURL_PC_URL_SIGNING", "").upper() in ("YES", "TRUE", "ON", "1")
    return url_of(url).startswith("http") and not signing


def name_path(path) -> Path:
    """What an input's output files are named after: a URL's path (its last part, no query); a local path as is."""
    if not is_remote(path):
        return Path(path)
    return Path(PurePosixPath(urlsplit(url_of(path)).path).name or "image")


def inputs(given: str, check_stac=None) -> list[Path] | None:
    """predict's one input when ``input=`` is a URL (None: a local path, listed by the command as before).
    ``check_stac(path)`` looks at a STAC file first (``stac.check``)."""
    if check_stac is not None and not is_remote(given):
        check_stac(Path(given).expanduser())
    if not is_remote(given):
        return None
    url = url_of(given)
    if not urlsplit(url).netloc:
        raise SegdetError(f"{given}: not a URL segdet reads (expected http(s)://host/…, s3://bucket/key or "
                          "gs://bucket/key)")
    if url_of(Path(url)) != url:
        raise SegdetError(f"{shown(url)}: a URL with '//' or '/./' in its path is not taken; give the same URL "
                          "without them")
    if ours(url):  # a missing or unreadable URL ends here, before the model is loaded
        status, headers, _ = request(url, first_byte=True)
        if status != 206 and not is_json(url, headers):
            raise SegdetError(NO_RANGES.format(shown(url)))
    return [Path(url)]


# --- HTTP stamps, small files ----------------------------------------------------------------------------------
def stamp(path) -> list:
    """What ``resume=true`` compares for a remote input: the server's ETag, Last-Modified and size (s3://, gs://:
    the object's, through GDAL's own request)."""
    url = url_of(path)
    if ours(url):
        return stamp_of(request(url, first_byte=True)[1])
    import rasterio

    with rasterio.Env(**gdal_options([url])):
        headers = gdal_vsi.headers(vsi_path(url))
    if headers is None:
        raise SegdetError(f"{shown(url)}: cannot read the object's headers (check the path and GDAL's AWS_*/GS_* "
                          "settings)")
    return stamp_of(headers)


def fetch(url: str) -> bytes:
    """A small remote file whole (a STAC item): http(s) by a GET with retries, s3:// and gs:// through GDAL."""
    url = url_of(url)
    if ours(url):
        return request(url, first_byte=False)[2]
    import rasterio

    with rasterio.Env(**gdal_options([url])):
        data = gdal_vsi.read(vsi_path(url))
    if data is None:
        raise SegdetError(f"{shown(url)}: cannot read it (check the path and GDAL's AWS_*/GS_* settings)")
    return data


# --- GDAL -----------------------------------------------------------------------------------------------------
def gdal_options(urls) -> dict[str, str]:
    """``DEFAULTS`` less what the user set in the environment, plus the file extensions GDAL may fetch when every
    URL names one (CPL_VSIL_CURL_ALLOWED_EXTENSIONS: no probing for sidecar files that are not there)."""
    options = {k: v for k, v in DEFAULTS.items() if k not in os.environ}
    suffixes = {PurePosixPath(urlsplit(url_of(u)).path).suffix.lower() for u in urls if is_remote(u)}
    if suffixes and "" not in suffixes and "CPL_VSIL_CURL_ALLOWED_EXTENSIONS" not in os.environ:
        options["CPL_VSIL_CURL_ALLOWED_EXTENSIONS"] = ",".join(sorted(suffixes | {".ovr", ".msk"}))
    return options


def describe(url: str, error: BaseException) -> str:
    """GDAL's error for ``url`` as one line naming the URL (its query, a credential, left out)."""
    what = shown(url)
    text = _first_line(error).replace(vsi_path(url), what).replace(url, what)
    code = re.search(r"response code:?\s*(\d{3})", text)
    if code:
        return http_error(what, int(code.group(1)))
    if "range downloading not supported" in text.lower():
        return NO_RANGES.format(what)
    if "timed out" in text.lower():
        return f"{what}: no answer in time (GDAL_HTTP_TIMEOUT): {text}"
    if "does not exist" in text.lower():
        return f"{what}: not found ({text})"
    return f"{what}: not a raster GDAL can read ({text})"


class RemoteScene(Scene):
    """A ``raster.Scene`` read through GDAL's network drivers: GDAL's settings in force while it is open, and a
    read that fails on the network (after GDAL's retries) ends the run in one line rather than leaving a tile
    empty: its finished tiles are journaled, so ``resume=true`` continues from there."""

    url: str | None = None
    datetime = None  # a STAC item's acquisition time (stac.py)
    _env = None
    _urls: tuple[str, ...] = ()

    def _read_inside(self, inside, what):
        try:
            return super()._read_inside(inside, what)
        except CorruptWindow:
            # a bad block, or the network? GDAL's error does not say; asking the server again does: a window
            # that fails while the server answers is corrupt (skipped, as in a local file), otherwise the run
            # stops here, its finished tiles journaled
            try:
                for u in self._urls:
                    stamp(u)
            except SegdetError as down:
                x0, y0, x1, y1 = inside
                raise SegdetError(f"{down} (while reading pixels {x0}..{x1} x {y0}..{y1}); resume=true continues "
                                  "from the last finished tile") from None
            raise

    def close(self) -> None:
        try:
            super().close()
        finally:
            for u in self._urls:  # a later open of the same URL in this process reads it afresh
                gdal_vsi.forget(vsi_path(u))
            if self._env is not None:
                self._env.__exit__(None, None, None)
                self._env = None


def open_gdal(source: str, urls, label, bands=None, scale: str = "auto", threads: int = 1,
              checked: bool = False) -> RemoteScene:
    """A RemoteScene of GDAL's ``source`` (a /vsi… name, or a VRT's XML over ``urls``); ``label`` names it in
    messages and gives the scene its ``path``. ``checked``: the http(s) URLs were probed already."""
    import rasterio

    if scale not in SCALES:
        raise SegdetError(f"input.scale must be one of {', '.join(SCALES)}, not '{scale}'")
    urls = tuple(url_of(u) for u in urls if is_remote(u))
    if not checked:
        for u in urls:
            if ours(u):
                probe(u)
    env = rasterio.Env(**gdal_options(urls))
    env.__enter__()
    try:
        try:
            ds = rasterio.open(source, **({"num_threads": str(threads)} if threads > 1 else {}))
        except Exception as e:  # noqa: BLE001 -- RasterioIOError and GDAL's CPLE_* errors
            url = next((u for u in urls if vsi_path(u) in str(e)), urls[0] if len(urls) == 1 else str(label))
            raise SegdetError(describe(url, e)) from None
        try:
            scene = RemoteScene(label, ds, _bands(label, bands, ds.count), scale, threads)
        except BaseException:
            ds.close()
            raise
    except BaseException:
        env.__exit__(None, None, None)
        raise
    scene.path, scene.url, scene._env, scene._urls = label, (urls[0] if len(urls) == 1 else None), env, urls
    return scene


def open_url(path, bands=None, scale: str = "auto", threads: int = 1) -> RemoteScene:
    """The remote raster ``path`` (a URL, or a predict input holding one) ready to read by window."""
    url = url_of(path)
    if ours(url):
        probe(url)
    return open_gdal(vsi_path(url), [url], Shown(shown(url)), bands, scale, threads, checked=True)


def suffix_of(path) -> str:
    """The suffix of an input's file name (a URL's: of its path, not its query)."""
    return name_path(path).suffix.lower() if is_remote(path) else Path(path).suffix.lower()


# predict's output folder (segdet.files, below the scenes) keys, stamps and names a URL input through this
register(InputKind(is_remote, url_of, stamp, name_path))
