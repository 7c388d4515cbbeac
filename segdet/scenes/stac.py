"""A STAC item as a scene: ``input=ITEM.json`` (a file or a URL, read with pystac) and the assets it names.

    input.asset=visual                  # one asset (its bands: input.bands as numbers, as for any raster)
    input.bands=[red,green,blue]        # bands by name: an asset's key, or an eo:bands common name or name

Bands picked by name from several single-band assets are read as one stack of bands through a GDAL VRT over the
assets' own paths (``/vsicurl/…``): window by window, nothing copied first. The VRT's grid is the finest asset's;
a coarser asset is resampled into it (bilinear), and assets in different CRSs are refused. With neither key the
``visual`` asset is read when there is one, else the bands red, green and blue.

The scene's ``datetime`` is the item's (or its ``start_datetime``). An ItemCollection or a list of items is a
stack of dates, not one scene: ``stack=true`` reads it (``segdet.scenes.stac_stack``), else it is refused in one
line.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segdet.errors import SegdetError
from segdet.scenes import GEO_HINT, need_geo, remote

SUFFIXES = (".json", ".geojson")
VISUAL = "visual"
RGB = ("red", "green", "blue")
RASTER_TYPES = ("image/tiff", "image/jp2", "image/vnd.stac.geotiff", "application/x-geotiff", "image/png")


def is_stac(path) -> bool:
    """An input read as a STAC item: a .json/.geojson file or URL."""
    return remote.suffix_of(path) in SUFFIXES


def load_json(path) -> tuple[object, str]:
    """(the parsed JSON of a STAC file or URL, the href its relative links resolve from); one line where it cannot
    be read or is not JSON."""
    if remote.is_remote(path):
        url = remote.url_of(path)
        raw, where, href = remote.fetch(url), remote.shown(url), url
    else:
        path = Path(path).expanduser()
        if not path.is_file():
            raise SegdetError(f"{path}: input not found")
        raw, where, href = path.read_bytes(), str(path), str(path.resolve())
    try:
        return json.loads(raw), href
    except ValueError as e:
        raise SegdetError(f"{where}: not valid JSON, so not a STAC item ({e})") from None


def check(path) -> None:
    """Refuse, before anything runs, a local JSON input that is not one STAC item."""
    if is_stac(path) and Path(path).is_file():
        check_item(load_json(path)[0], str(path))


def check_item(obj, where: str) -> None:
    """Refuse in one line naming ``where`` a parsed JSON that is not one STAC item (saying what it is instead)."""
    stack = "is a stack of dates: predict it with stack=true (each item one frame), or give one item's JSON"
    if isinstance(obj, list):
        if obj and all(isinstance(o, dict) and o.get("type") == "Feature" for o in obj):
            raise SegdetError(f"{where}: a list of {len(obj)} STAC items {stack}")
        raise SegdetError(f"{where}: a JSON list, not a STAC item; a list of dated scenes is predicted with "
                          "stack=true")
    kind = obj.get("type") if isinstance(obj, dict) else None
    if kind == "FeatureCollection":
        raise SegdetError(f"{where}: a STAC ItemCollection of {len(obj.get('features') or [])} items {stack}")
    if kind in ("Collection", "Catalog"):
        raise SegdetError(f"{where}: a STAC {kind}, not an item; give one item's JSON")
    if kind != "Feature" or "assets" not in obj:
        raise SegdetError(f"{where}: not a STAC item (expected a GeoJSON Feature with assets)")


@dataclass(frozen=True)
class Band:
    href: str       # the asset's absolute href (URL or local path)
    band: int       # its band number in that asset, from 1
    name: str       # as the user asked for it


def _band_names(asset) -> list[tuple[str | None, str | None]]:
    """(common name, name) of each band of a pystac asset: STAC 1.0's ``eo:bands`` or 1.1's ``bands``."""
    fields = asset.extra_fields
    bands = fields.get("eo:bands") or fields.get("bands") or []
    return [(b.get("common_name") or b.get("eo:common_name"), b.get("name")) for b in bands if isinstance(b, dict)]


def _is_raster(asset) -> bool:
    media = (asset.media_type or "").split(";")[0].strip().lower()
    return not media or media in RASTER_TYPES or "tiff" in media


def pick(item, where: str, asset: str | None, bands) -> list[Band]:
    """The item's bands to read, in order, from ``input.asset`` and ``input.bands`` (see the module)."""
    assets = item.assets
    names = [b for b in (bands or ())]
    numbered = bool(names) and all(isinstance(b, int) and not isinstance(b, bool) for b in names)
    if asset is not None:
        if asset not in assets:
            raise SegdetError(f"{where}: input.asset={asset}: no such asset (this item has: {', '.join(assets)})")
        href = assets[asset].get_absolute_href()
        if not names:
            return [Band(href, 0, asset)]  # 0: the raster's own default bands (raster._bands)
        if numbered:
            return [Band(href, b, f"{asset}:{b}") for b in names]
        known = _band_names(assets[asset])
        out = []
        for name in names:
            k = next((i for i, (common, own) in enumerate(known) if name in (common, own)), None)
            if k is None:
                raise SegdetError(f"{where}: asset {asset} has no band '{name}' (its bands: "
                                  f"{', '.join(c or n or '?' for c, n in known) or 'none named'})")
            out.append(Band(href, k + 1, str(name)))
        return out
    if numbered:
        raise SegdetError(f"{where}: with a STAC item, input.bands are band names (an asset's key or its eo:bands "
                          "common names, e.g. [red,green,blue]); to number the bands of one asset give "
                          "input.asset=KEY as well")
    if not names:
        if VISUAL in assets:
            return [Band(assets[VISUAL].get_absolute_href(), 0, VISUAL)]
        names = list(RGB)
    return [_by_name(item, where, str(name)) for name in names]


def _by_name(item, where: str, name: str) -> Band:
    assets = {k: a for k, a in item.assets.items() if _is_raster(a)}
    if name in assets and len(_band_names(assets[name])) <= 1:
        return Band(assets[name].get_absolute_href(), 1, name)
    # a single-band asset before a band inside a composite (the visual asset also holds red)
    for single in (True, False):
        for key, a in assets.items():
            known = _band_names(a)
            if single != (len(known) == 1):
                continue
            for k, (common, own) in enumerate(known):
                if name in (common, own):
                    return Band(a.get_absolute_href(), k + 1, name)
    named = sorted({c for a in assets.values() for c, _ in _band_names(a) if c})
    raise SegdetError(f"{where}: no asset has the band '{name}' (common names in this item: "
                      f"{', '.join(named) or 'none'}; assets: {', '.join(item.assets)}); give input.bands by these "
                      "names or input.asset=KEY")


def _vrt(datasets: dict[str, object], picked: list[Band]) -> str:
    """A VRT over the picked bands, in the grid of the finest of their assets."""
    ref = min(datasets.values(), key=lambda d: abs(d.transform.a))
    for href, d in datasets.items():
        if d.transform.b or d.transform.d:
            raise SegdetError(f"{remote.shown(href)}: a rotated grid; read it alone (input.asset=KEY)")
        if d.crs != ref.crs:
            raise SegdetError(f"{remote.shown(href)}: its CRS ({d.crs}) differs from the item's other bands' "
                              f"({ref.crs}); read one asset (input.asset=KEY) or bands that share a CRS")
    dtype = np.result_type(*[d.dtypes[b.band - 1] for b in picked for d in [datasets[b.href]]])
    gdal_type = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
                 "int32": "Int32", "float32": "Float32", "float64": "Float64"}.get(dtype.name, "Float64")
    root = ET.Element("VRTDataset", rasterXSize=str(ref.width), rasterYSize=str(ref.height))
    if ref.crs is not None:
        ET.SubElement(root, "SRS", dataAxisToSRSAxisMapping="1,2").text = ref.crs.to_wkt()
    ET.SubElement(root, "GeoTransform").text = ", ".join(repr(float(v)) for v in ref.transform.to_gdal())
    for i, b in enumerate(picked, 1):
        d = datasets[b.href]
        band = ET.SubElement(root, "VRTRasterBand", dataType=gdal_type, band=str(i))
        nodata = d.nodatavals[b.band - 1]
        if nodata is not None:
            ET.SubElement(band, "NoDataValue").text = repr(float(nodata))
        ET.SubElement(band, "Description").text = b.name
        src = ET.SubElement(band, "ComplexSource" if nodata is not None else "SimpleSource",
                            **({"resampling": "bilinear"} if d is not ref else {}))
        ET.SubElement(src, "SourceFilename", relativeToVRT="0").text = remote.vsi_path(b.href)
        ET.SubElement(src, "SourceBand").text = str(b.band)
        by, bx = d.block_shapes[b.band - 1]
        ET.SubElement(src, "SourceProperties", RasterXSize=str(d.width), RasterYSize=str(d.height),
                      DataType=gdal_type if d.dtypes[b.band - 1] == dtype.name else "Float64",
                      BlockXSize=str(bx), BlockYSize=str(by))
        ET.SubElement(src, "SrcRect", xOff="0", yOff="0", xSize=str(d.width), ySize=str(d.height))
        # the asset's extent in the reference grid's pixels (north-up grids, as STAC assets are)
        r, t = ref.transform, d.transform
        x0, y0 = (t.c - r.c) / r.a, (t.f - r.f) / r.e
        x1, y1 = x0 + d.width * t.a / r.a, y0 + d.height * t.e / r.e
        ET.SubElement(src, "DstRect", xOff=repr(x0), yOff=repr(y0), xSize=repr(x1 - x0), ySize=repr(y1 - y0))
        if nodata is not None:
            ET.SubElement(src, "NODATA").text = repr(float(nodata))
    return ET.tostring(root, encoding="unicode")


def open_item(path, asset: str | None, bands, scale: str = "auto", threads: int = 1):
    """The STAC item at ``path`` (a file, or a predict input holding its URL) as a scene with its ``datetime``."""
    rasterio = need_geo("reading a STAC item")
    try:
        import pystac
    except ImportError:
        raise SegdetError(f"reading a STAC item needs pystac: {GEO_HINT}") from None

    obj, href = load_json(path)
    where = remote.shown(href) if remote.is_remote(href) else str(path)
    check_item(obj, where)
    try:
        item = pystac.Item.from_dict(obj, href=href, migrate=True)
    except Exception as e:  # noqa: BLE001 -- pystac's STACError, KeyError, ValueError on a malformed item
        raise SegdetError(f"{where}: not a STAC item pystac can read ({remote._first_line(e)})") from None
    picked = pick(item, where, asset, bands)
    label = remote.Shown(remote.shown(href)) if remote.is_remote(href) else Path(path)
    hrefs = list(dict.fromkeys(b.href for b in picked))
    for h in hrefs:
        if remote.is_remote(h) and remote.ours(h):
            remote.probe(remote.url_of(h))
        elif not remote.is_remote(h) and not Path(h).is_file():
            raise SegdetError(f"{where}: asset file {h} not found")
    if len(hrefs) == 1 and (picked[0].band == 0 or len(picked) in (1, 3)):
        numbers = None if picked[0].band == 0 else [b.band for b in picked]
        scene = remote.open_gdal(remote.vsi_path(hrefs[0]), hrefs, label, numbers, scale, threads, checked=True)
    else:
        if len(picked) not in (1, 3):
            raise SegdetError(f"{where}: input.bands must name 1 or 3 bands, not {len(picked)}")
        datasets = {}
        with rasterio.Env(**remote.gdal_options(hrefs)):
            try:
                for h in hrefs:
                    try:
                        datasets[h] = rasterio.open(remote.vsi_path(h))
                    except Exception as e:  # noqa: BLE001 -- GDAL's errors, as for one remote raster
                        raise SegdetError(remote.describe(h, e)) from None
                xml = _vrt(datasets, picked)
            finally:
                for d in datasets.values():
                    d.close()
        scene = remote.open_gdal(xml, hrefs, label, None, scale, threads, checked=True)
    scene.datetime = item.datetime or item.common_metadata.start_datetime
    scene.item_id = item.id
    return scene


def open_input(path, *, asset: str | None, bands, scale: str = "auto", threads: int = 1):
    """predict's remote input or STAC item as a scene: a STAC item by its suffix (or, for a URL without one, its
    JSON content type), else a remote raster; ``input.asset`` only with a STAC item."""
    stac = is_stac(path)
    if not stac and remote.is_remote(path) and remote.ours(path) and not remote.suffix_of(path):
        url = remote.url_of(path)
        stac = remote.is_json(url, remote.request(url, first_byte=True)[1])
    if stac:
        return open_item(path, asset, bands, scale, threads)
    if asset is not None:
        raise SegdetError(f"{remote.Shown(remote.shown(remote.url_of(path))) if remote.is_remote(path) else path}: "
                          f"input.asset={asset} picks an asset of a STAC item, and this input is not one")
    return remote.open_url(path, bands, scale, threads)
