"""The file suffixes segdet takes for scenes and for vector files, in one table: predict's inputs, a labeled scene's
images and labels, and vector prompts all read it."""
from __future__ import annotations

# may hold a georeferenced raster, read window by window (a TIFF without georeferencing stays an ordinary image)
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2")
# vector files (OGR, through pyogrio): polygons, boxes and points
VECTOR_SUFFIXES = (".geojson", ".gpkg", ".shp", ".fgb", ".gml", ".kml", ".sqlite")
# a label file named .json is GeoJSON (a prompts=FILE.json is segdet's own prompt format, never a vector file)
LABEL_VECTOR_SUFFIXES = VECTOR_SUFFIXES + (".json",)
LABEL_SUFFIXES = RASTER_SUFFIXES + LABEL_VECTOR_SUFFIXES
