"""The one small HTTP request segdet makes itself before GDAL reads an http(s) scene, and the settings it shares
with GDAL's: the first byte of the file says whether the server is there, allows the read and answers range
requests (GDAL reads a COG by ranges), and gives the file's stamp (ETag, Last-Modified, size) for ``resume=true``.

A 401/403, a 404, a server that sends whole files, a timeout and a refused connection each end in one line;
answers worth retrying (429, 5xx, a dropped connection) are retried with a doubling delay, as GDAL retries its own
requests. The request carries what GDAL's settings in the environment give GDAL's (``GDAL_HTTP_HEADERS``,
``GDAL_HTTP_HEADER_FILE``, ``GDAL_HTTP_USERPWD``, ``GDAL_HTTP_BEARER``, ``GDAL_HTTP_USERAGENT``,
``GDAL_HTTP_TIMEOUT``, ``GDAL_HTTP_MAX_RETRY``, ``GDAL_HTTP_RETRY_DELAY``); a setting the user has not given
takes its value in ``DEFAULTS``, which are also GDAL's while a remote scene is open (``remote.gdal_options``).
"""
from __future__ import annotations

import base64
import email.utils
import os
import re
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit, urlunsplit

from segdet.errors import SegdetError

RETRY_CODES = (429, 500, 502, 503, 504)
# GDAL settings a user who reads COGs over HTTP expects (GDAL's "COG" and "/vsicurl/" docs); the user's own
# environment wins over each of them
DEFAULTS = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no directory listing and no sidecar probing per open
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MULTIPLEX": "YES",
    "GDAL_HTTP_MAX_RETRY": "4",
    "GDAL_HTTP_RETRY_DELAY": "1",                 # seconds, doubled at each retry
    "GDAL_HTTP_CONNECTTIMEOUT": "30",
    "GDAL_HTTP_TIMEOUT": "120",                   # a whole request, a tile or a few
}
NO_RANGES = ("{}: the server does not answer HTTP range requests (it sent the whole file for its first byte); "
             "remote scenes are read by ranges: download the file, or serve it from a server that supports them")


def is_json(url: str, headers: dict) -> bool:
    """A JSON document (a STAC item) rather than a raster: by the URL's suffix, else the answer's content type."""
    suffix = PurePosixPath(urlsplit(url).path).suffix.lower()
    return suffix in (".json", ".geojson") or (not suffix and "json" in
                                               {k.lower(): v for k, v in headers.items()}.get("content-type", ""))


def _setting(name: str) -> str | None:
    return os.environ.get(name) or None


def _headers() -> dict[str, str]:
    """The request headers GDAL's settings give (GDAL_HTTP_HEADERS, _HEADER_FILE, _USERPWD, _BEARER, _USERAGENT)."""
    lines: list[str] = []
    if _setting("GDAL_HTTP_HEADER_FILE"):
        try:
            lines += Path(_setting("GDAL_HTTP_HEADER_FILE")).read_text().splitlines()
        except OSError as e:
            raise SegdetError(f"GDAL_HTTP_HEADER_FILE={_setting('GDAL_HTTP_HEADER_FILE')}: cannot read it "
                              f"({e.strerror})") from None
    if _setting("GDAL_HTTP_HEADERS"):
        lines += re.split(r"\r?\n|,(?=[^,:]+:)", _setting("GDAL_HTTP_HEADERS"))
    headers = dict(tuple(s.strip() for s in line.split(":", 1)) for line in lines if ":" in line)
    if _setting("GDAL_HTTP_USERPWD"):
        headers["Authorization"] = "Basic " + base64.b64encode(_setting("GDAL_HTTP_USERPWD").encode()).decode()
    if _setting("GDAL_HTTP_BEARER"):
        headers["Authorization"] = f"Bearer {_setting('GDAL_HTTP_BEARER')}"
    headers.setdefault("User-Agent", _setting("GDAL_HTTP_USERAGENT") or "segdet")
    return headers


def _number(name: str, default: float) -> float:
    value = _setting(name) or DEFAULTS.get(name)
    try:
        return float(value) if value is not None else default
    except ValueError:
        raise SegdetError(f"{name}={value}: expected a number") from None


def request(url: str, *, first_byte: bool) -> tuple[int, dict, bytes]:
    """(status, headers, body) of a GET of ``url`` (``first_byte``: of its first byte, by a range request), after
    the retries an answer worth retrying earns. 401/403/404, a timeout and a refused connection: one line."""
    timeout = _number("GDAL_HTTP_TIMEOUT", 120.0)
    retries, delay = int(_number("GDAL_HTTP_MAX_RETRY", 0)), _number("GDAL_HTTP_RETRY_DELAY", 1.0)
    headers = {**_headers(), **({"Range": "bytes=0-0"} if first_byte else {})}
    what = shown(url)
    for attempt in range(retries + 1):
        last = attempt == retries
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as answer:
                # the first byte only: a server that ignores the range is not read on
                body = answer.read(1 if first_byte else -1)
                return answer.status, dict(answer.headers.items()), body
        except urllib.error.HTTPError as e:
            if e.code not in RETRY_CODES or last:
                raise SegdetError(http_error(what, e.code, attempt)) from None
            wait = e.headers.get("Retry-After", "")
            pause = min(float(wait), 30.0) if wait.isdigit() else delay * 2 ** attempt
        except (TimeoutError, socket.timeout):
            raise SegdetError(f"{what}: no answer within {timeout:g} s (GDAL_HTTP_TIMEOUT); the server is slow or "
                              "unreachable") from None
        except (urllib.error.URLError, ConnectionError, OSError) as e:
            reason = getattr(e, "reason", e)
            if isinstance(reason, (TimeoutError, socket.timeout)):
                raise SegdetError(f"{what}: no answer within {timeout:g} s (GDAL_HTTP_TIMEOUT); the server is "
                                  "slow or unreachable") from None
            if last or not isinstance(reason, (ConnectionResetError, ConnectionAbortedError)):  # a dropped one
                raise SegdetError(f"{what}: cannot connect ({reason})") from None
            pause = delay * 2 ** attempt
        time.sleep(pause)
    raise AssertionError("unreachable")


def http_error(what: str, code: int, retried: int = 0) -> str:
    if code in (401, 403):
        return (f"{what}: access denied (HTTP {code}); give credentials by GDAL's settings (GDAL_HTTP_HEADERS, "
                "GDAL_HTTP_USERPWD, GDAL_HTTP_BEARER; AWS_* for s3://) or a signed URL")
    if code in (404, 410):
        return f"{what}: not found (HTTP {code})"
    if code in RETRY_CODES:
        return (f"{what}: the server answered HTTP {code}" + (f", also after {retried} retries "
                "(GDAL_HTTP_MAX_RETRY, GDAL_HTTP_RETRY_DELAY)" if retried else "") + "; try again later")
    return f"{what}: the server answered HTTP {code}"


def probe(url: str) -> list:
    """Check that GDAL can read ``url`` by ranges and return its stamp [ETag, Last-Modified, size]."""
    status, headers, _ = request(url, first_byte=True)
    if status != 206:
        raise SegdetError(NO_RANGES.format(shown(url)))
    return stamp_of(headers)


def stamp_of(headers: dict) -> list:
    h = {k.lower(): v for k, v in headers.items()}
    size = h.get("content-range", "").rpartition("/")[2] or h.get("content-length")
    modified = h.get("last-modified")
    if modified:  # one spelling of the date, whatever the server's
        try:
            modified = email.utils.parsedate_to_datetime(modified).isoformat()
        except (TypeError, ValueError):
            pass
    return [h.get("etag"), modified, int(size) if size and size.isdigit() else None]


def shown(url: str) -> str:
    """The URL as messages and logs show it: without its query (a signed URL's query is a credential)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
