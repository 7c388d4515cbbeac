"""QGIS layers as what segdet reads, and segdet's outputs as what Processing returns.

A raster layer goes by its source: a file, or a URL (``/vsicurl/https://…``, ``/vsis3/…``, which segdet reads by
ranges as GDAL does); a layer of any other provider (WMS, XYZ tiles, a database) is refused in one line, since
segdet reads pixels through GDAL. A vector layer (prompts, an area of interest) is always written to a temporary
GeoPackage in the raster's CRS, so a memory layer, a selection or a layer in another CRS work as QGIS users expect.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from qgis.core import (QgsCoordinateTransformContext, QgsProcessingException, QgsRasterLayer, QgsVectorFileWriter,
                       QgsVectorLayer)

VSI = ("/vsicurl/", "/vsis3/", "/vsigs/", "/vsiaz/", "/vsiadls/", "/vsioss/", "/vsiswift/", "/vsihdfs/")
URLS = ("http://", "https://", "s3://", "gs://")


def raster_source(layer: QgsRasterLayer, what: str = "INPUT") -> str:
    """The file or URL segdet is to read for ``layer``, or a one-line QgsProcessingException."""
    if layer is None:
        raise QgsProcessingException(f"{what}: no raster layer given")
    source = layer.source()
    if layer.providerType() != "gdal":
        raise QgsProcessingException(
            f"{what}: layer '{layer.name()}' is a {layer.providerType()} layer, not a file or URL that GDAL reads; "
            "save it as a GeoTIFF first (Raster > Conversion > Translate) and give that layer")
    if source.startswith(VSI) or source.lower().startswith(URLS):
        return source
    path = source.split("|", 1)[0]  # GDAL's "path|option=..." form: the file itself
    if not os.path.isfile(path):
        raise QgsProcessingException(f"{what}: layer '{layer.name()}' reads '{source}', which is not a file segdet "
                                     "can open; save it as a GeoTIFF first")
    return path


def write_vector(source, crs, folder: Path, name: str, context, what: str) -> Path:
    """The features of ``source`` (a QgsProcessingFeatureSource: a layer, its selection, a memory layer) as a
    GeoPackage in ``crs`` under ``folder``; one line when there is none."""
    if source is None:
        raise QgsProcessingException(f"{what}: no vector layer given")
    layer = source.materialize(_request(), None) if hasattr(source, "materialize") else source
    if layer is None or layer.featureCount() == 0:
        raise QgsProcessingException(f"{what}: the layer has no features")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.gpkg"
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.ct = _transform(layer.crs(), crs, context)
    result = QgsVectorFileWriter.writeAsVectorFormatV3(layer, str(path), _transform_context(context), options)
    if result[0] != QgsVectorFileWriter.NoError:
        raise QgsProcessingException(f"{what}: cannot write its features for segdet ({result[1]})")
    return path


def _request():
    from qgis.core import QgsFeatureRequest

    return QgsFeatureRequest()


def _transform_context(context):
    return context.transformContext() if context is not None else QgsCoordinateTransformContext()


def _transform(src, dst, context):
    from qgis.core import QgsCoordinateTransform

    if not dst.isValid() or src == dst:
        return QgsCoordinateTransform()
    return QgsCoordinateTransform(src, dst, _transform_context(context))


def one_file(folder: Path, pattern: str, what: str) -> Path:
    """The file segdet wrote for the input (one input: one file), or a one-line error."""
    found = sorted(folder.glob(pattern))
    if not found:
        raise QgsProcessingException(f"segdet wrote no {what} ({folder / pattern})")
    return found[-1]


def save_raster(src: Path, dest: str) -> str:
    """segdet's GeoTIFF at the destination Processing chose: copied, or translated by GDAL into another format."""
    dest_path = Path(dest)
    dest_path.parent.mkdir(parents=True, exist_ok=True)
    if dest_path.suffix.lower() in (".tif", ".tiff"):
        shutil.copyfile(src, dest_path)
    else:
        from osgeo import gdal

        if gdal.Translate(str(dest_path), str(src)) is None:
            raise QgsProcessingException(f"cannot write {dest}: {gdal.GetLastErrorMsg()}")
    return str(dest_path)


def save_vector(src: Path, dest: str, context) -> str:
    """segdet's polygons at the destination Processing chose, in the format of its extension."""
    layer = QgsVectorLayer(str(src), Path(src).stem, "ogr")
    if not layer.isValid():
        raise QgsProcessingException(f"segdet's polygons {src} cannot be read")
    dest_path = Path(dest)
    dest_path.parent.mkdir(parents=True, exist_ok=True)
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = QgsVectorFileWriter.driverForExtension(dest_path.suffix) or "GPKG"
    result = QgsVectorFileWriter.writeAsVectorFormatV3(layer, str(dest_path), _transform_context(context), options)
    if result[0] != QgsVectorFileWriter.NoError:
        raise QgsProcessingException(f"cannot write {dest}: {result[1]}")
    return str(dest_path)
