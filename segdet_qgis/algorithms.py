"""The four Processing algorithms: each builds a ``segdet predict`` command line from its parameters, runs it
(``run_segdet``) in a temporary folder, and hands segdet's outputs to Processing, which loads them as layers.

    segdet:segment_with_prompts   raster + boxes/points layer + SAM checkpoint -> mask raster, polygons
    segdet:segment_everything     raster + SAM checkpoint [+ AOI]              -> instance-id raster, polygons
    segdet:class_map              raster + semantic checkpoint [+ AOI]         -> class raster, polygons
    segdet:change                 rasters of several dates + checkpoint [+ AOI] -> change raster, polygons, areas

Every algorithm takes ``CHECKPOINT``, ``SEGDET`` (the segdet executable: default the provider's setting, else
``segdet`` on PATH) and ``OPTIONS`` (more ``key=value`` settings for segdet, e.g. ``tile.size=512``).
"""
from __future__ import annotations

import csv
import re
import shlex
import shutil
import uuid
from pathlib import Path

from qgis.core import (QgsFeature, QgsField, QgsFields, QgsProcessing, QgsProcessingAlgorithm,
                       QgsProcessingException, QgsProcessingParameterDefinition, QgsProcessingParameterEnum,
                       QgsProcessingParameterFeatureSink, QgsProcessingParameterFeatureSource,
                       QgsProcessingParameterFile, QgsProcessingParameterMultipleLayers,
                       QgsProcessingParameterRasterDestination, QgsProcessingParameterRasterLayer,
                       QgsProcessingParameterString, QgsProcessingParameterVectorDestination, QgsProcessingUtils,
                       QgsWkbTypes)
from qgis.PyQt.QtCore import QVariant

from . import layers, run_segdet

SETTING = "SEGDET_EXECUTABLE"  # the provider's setting (Processing > Options > Providers > segdet)


def hydra_value(value: str) -> str:
    """``value`` for a segdet (Hydra) command line: quoted where it holds more than letters, digits and
    ``_ . / : - + @ %`` (a path with spaces, commas or '=', a URL with a query)."""
    if re.fullmatch(r"[\w./:\-+@%]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def executable(given: str) -> str:
    """The segdet to run: the SEGDET parameter, else the provider's setting, else ``segdet`` on PATH."""
    if given:
        return given
    try:
        from processing.core.ProcessingConfig import ProcessingConfig

        configured = ProcessingConfig.getSetting(SETTING)
    except ImportError:  # the Processing plugin is not loaded
        configured = None
    found = configured or shutil.which("segdet")
    if not found:
        raise QgsProcessingException("segdet not found: give SEGDET, set it in Processing > Options > Providers > "
                                     "segdet, or put segdet on PATH")
    return found


class SegdetAlgorithm(QgsProcessingAlgorithm):
    """What the four share: the checkpoint, the executable, extra options, the run and the outputs."""

    ID = NAME = GROUP = HELP = ""
    TASK = "sam"

    def name(self):
        return self.ID

    def displayName(self):
        return self.NAME

    def group(self):
        return self.GROUP

    def groupId(self):
        return self.GROUP.lower().replace(" ", "_")

    def shortHelpString(self):
        return self.HELP

    def createInstance(self):
        return type(self)()

    def common_parameters(self, aoi: bool = True) -> None:
        self.addParameter(QgsProcessingParameterFile("CHECKPOINT", "segdet checkpoint (.pt)",
                                                     extension="pt"))
        if aoi:
            self.addParameter(QgsProcessingParameterFeatureSource(
                "AOI", "Area of interest (only what touches it is predicted)",
                [QgsProcessing.TypeVectorPolygon], optional=True))
        # fileFilter "*": an executable has no extension (QGIS's default filter, *.*, would refuse it)
        for p in (QgsProcessingParameterFile("SEGDET", "segdet executable (default: the provider's setting, "
                                                       "else segdet on PATH)", optional=True,
                                             fileFilter="All files (*)"),
                  QgsProcessingParameterString("OPTIONS", "More segdet settings (key=value ...)", optional=True)):
            p.setFlags(p.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(p)

    def outputs(self) -> None:
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT_RASTER", "Mask"))
        self.addParameter(QgsProcessingParameterVectorDestination("OUTPUT_VECTOR", "Polygons",
                                                                  QgsProcessing.TypeVectorPolygon))

    # --- running ---------------------------------------------------------------------------------------------
    def segdet(self, parameters, context, feedback, work: Path, settings: list[str], crs) -> Path:
        """Run ``segdet predict`` with ``settings`` (plus the checkpoint, AOI, options) into ``work/out``."""
        ckpt = self.parameterAsFile(parameters, "CHECKPOINT", context)
        if not ckpt or not Path(ckpt).is_file():
            raise QgsProcessingException(f"CHECKPOINT: {ckpt or '(none)'}: file not found")
        extra = []
        if parameters.get("AOI") is not None:
            aoi = layers.write_vector(self.parameterAsSource(parameters, "AOI", context), crs, work, "aoi", context,
                                      "AOI")
            extra.append(f"aoi={hydra_value(str(aoi))}")
        options = self.parameterAsString(parameters, "OPTIONS", context) or ""
        out = work / "out"
        args = [executable(self.parameterAsString(parameters, "SEGDET", context)), "predict", f"task={self.TASK}",
                f"ckpt={hydra_value(ckpt)}", *settings, *extra, f"output={hydra_value(str(out))}",
                f"hydra.run.dir={hydra_value(str(work / 'run'))}", *shlex.split(options)]
        try:
            run_segdet.run(args, feedback)
        except run_segdet.SegdetFailed as e:
            raise QgsProcessingException("canceled" if str(e) == "canceled" else f"segdet: {e}") from None
        return out

    def work_folder(self) -> Path:
        folder = Path(QgsProcessingUtils.tempFolder()) / f"segdet_{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True)
        return folder

    def processAlgorithm(self, parameters, context, feedback):
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        source = layers.raster_source(layer)
        work = self.work_folder()
        out = self.segdet(parameters, context, feedback, work,
                          [f"input={hydra_value(source)}", *self.settings(parameters, context, work, layer)],
                          layer.crs())
        raster = layers.save_raster(layers.one_file(out / "masks", "*.tif", "mask GeoTIFF"),
                                    self.parameterAsOutputLayer(parameters, "OUTPUT_RASTER", context))
        vector = layers.save_vector(layers.one_file(out / "vectors", "*.geojson", "polygons"),
                                    self.parameterAsOutputLayer(parameters, "OUTPUT_VECTOR", context), context)
        return {"OUTPUT_RASTER": raster, "OUTPUT_VECTOR": vector}

    def settings(self, parameters, context, work: Path, layer) -> list[str]:
        return []


class SegmentWithPrompts(SegdetAlgorithm):
    ID, NAME, GROUP = "segment_with_prompts", "Segment raster with prompts", "Segment Anything"
    HELP = ("SAM on a raster, prompted by a layer of boxes (polygons: their bounds) and points (a 'label' field: 1 "
            "object, 0 background). The prompts are reprojected to the raster's CRS. Outputs: the 0/1 mask in the "
            "raster's grid and one polygon per region.")

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Raster (a file or URL)"))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "PROMPTS", "Prompts (boxes or points)", [QgsProcessing.TypeVectorPolygon, QgsProcessing.TypeVectorPoint]))
        self.common_parameters(aoi=False)
        self.outputs()

    def settings(self, parameters, context, work, layer):
        prompts = layers.write_vector(self.parameterAsSource(parameters, "PROMPTS", context), layer.crs(), work,
                                      "prompts", context, "PROMPTS")
        return [f"prompts={hydra_value(str(prompts))}"]


class SegmentEverything(SegdetAlgorithm):
    ID, NAME, GROUP = "segment_everything", "Segment everything", "Segment Anything"
    HELP = ("SAM with a grid of point prompts (prompts=grid, settings amg.*): every object in the raster. Outputs: "
            "an instance-id raster and one polygon per instance, with its score.")

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Raster (a file or URL)"))
        self.common_parameters()
        self.outputs()

    def settings(self, parameters, context, work, layer):
        return ["prompts=grid"]


class ClassMap(SegdetAlgorithm):
    ID, NAME, GROUP, TASK = "class_map", "Class map", "Semantic segmentation", "semantic"
    HELP = ("A semantic (task=semantic) checkpoint's class map of the raster. Outputs: the class raster (class ids, "
            "a colour table) and polygons with their class and area.")

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Raster (a file or URL)"))
        self.common_parameters()
        self.outputs()


class Change(SegdetAlgorithm):
    ID, NAME, GROUP = "change", "Change between dates", "Change"
    TASKS = ("semantic", "sam")
    HELP = ("Rasters of one place at several dates (dated by their file names or metadata), predicted as a stack "
            "(stack=true). Outputs: the change between the first and the last date (0 absent at both, 1 gained, 2 "
            "lost, 3 present at both), its polygons, and a table of the areas per date and class.")

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterMultipleLayers("INPUTS", "Rasters of several dates",
                                                               QgsProcessing.TypeRaster))
        self.addParameter(QgsProcessingParameterEnum("TASK", "The checkpoint's task", list(self.TASKS),
                                                     defaultValue=0))
        self.common_parameters()
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT_RASTER", "Change"))
        self.addParameter(QgsProcessingParameterVectorDestination("OUTPUT_VECTOR", "Change polygons",
                                                                  QgsProcessing.TypeVectorPolygon))
        self.addParameter(QgsProcessingParameterFeatureSink("OUTPUT_TABLE", "Areas", QgsProcessing.TypeVector))

    def processAlgorithm(self, parameters, context, feedback):
        rasters = self.parameterAsLayerList(parameters, "INPUTS", context)
        if len(rasters) < 2:
            raise QgsProcessingException("INPUTS: give rasters of at least two dates")
        work = self.work_folder()
        listing = work / "frames.txt"
        listing.write_text("".join(layers.raster_source(r, "INPUTS") + "\n" for r in rasters), encoding="utf-8")
        self.TASK = self.TASKS[self.parameterAsEnum(parameters, "TASK", context)]
        out = self.segdet(parameters, context, feedback, work,
                          [f"input={hydra_value(str(listing))}", "stack=true", "stack.change=first"],
                          rasters[0].crs())
        change = out / "change"
        raster = layers.save_raster(layers.one_file(change, "*.tif", "change GeoTIFF"),
                                    self.parameterAsOutputLayer(parameters, "OUTPUT_RASTER", context))
        vector = layers.save_vector(layers.one_file(change, "*.geojson", "change polygons"),
                                    self.parameterAsOutputLayer(parameters, "OUTPUT_VECTOR", context), context)
        return {"OUTPUT_RASTER": raster, "OUTPUT_VECTOR": vector,
                "OUTPUT_TABLE": self.areas(out / "areas.csv", parameters, context)}

    def areas(self, path: Path, parameters, context) -> str:
        """areas.csv (date, class, area_m2, count) as a table layer."""
        if not path.is_file():
            raise QgsProcessingException(f"segdet wrote no areas table ({path})")
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        fields = QgsFields()
        types = {"area_m2": QVariant.Double, "count": QVariant.Int}
        for name in (rows[0].keys() if rows else ("date", "class", "area_m2", "count")):
            fields.append(QgsField(name, types.get(name, QVariant.String)))
        sink, dest = self.parameterAsSink(parameters, "OUTPUT_TABLE", context, fields, QgsWkbTypes.NoGeometry)
        for row in rows:
            feature = QgsFeature(fields)
            feature.setAttributes([float(row[k]) if k == "area_m2" else int(float(row[k])) if k == "count"
                                   else row[k] for k in row])
            sink.addFeature(feature)
        return dest


ALGORITHMS = (SegmentWithPrompts, SegmentEverything, ClassMap, Change)
