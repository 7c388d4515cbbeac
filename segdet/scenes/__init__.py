"""Whole scenes: GeoTIFF/COG reading by window, tiled prediction, georeferenced outputs and vector prompts.

The geo packages (rasterio, shapely, pyogrio) are the ``geo`` extra; ``need_geo`` says in one line how to add
them when they are missing.
"""
from __future__ import annotations

from segdet.errors import SegdetError

GEO_HINT = "pip install 'segdet[geo]'"


def need_geo(what: str):
    """Import rasterio (and check shapely, pyogrio), or stop with one line naming the pip command."""
    try:
        import pyogrio  # noqa: F401
        import rasterio
        import shapely  # noqa: F401
    except ImportError as e:
        raise SegdetError(f"{what} needs the geo packages ({e.name} is missing): {GEO_HINT}") from None
    return rasterio
