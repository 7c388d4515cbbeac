"""Run by QGIS's own Python (``python3`` with ``qgis.core``, headless) for tests/geo/test_qgis.py: the plugin
loaded from PLUGINS as QGIS loads it, each algorithm's parameters, a WMS layer refused in one line, and Cancel
of a running algorithm (a stand-in segdet, ``SEGDET``) once its progress was read. Prints one JSON object.

    python3 qgis_check.py PLUGINS SEGDET CHECKPOINT SCENE
"""
import json
import os
import sys

from qgis.core import (QgsApplication, QgsFeature, QgsGeometry, QgsProcessingContext,
                       QgsProcessingException, QgsProcessingFeedback, QgsRasterLayer, QgsVectorLayer)

plugins, segdet, checkpoint, scene = sys.argv[1:5]
QgsApplication.setPrefixPath("/usr", True)
app = QgsApplication([], False)
app.initQgis()
sys.path[:0] = [plugins, "/usr/share/qgis/python/plugins"]
from processing.core.Processing import Processing  # noqa: E402

Processing.initialize()
import processing  # noqa: E402
import segdet_qgis  # noqa: E402

plugin = segdet_qgis.classFactory(None)
plugin.initProcessing()
registry = QgsApplication.processingRegistry()
out = {"parameters": {a.id(): [p.name() for p in a.parameterDefinitions()]
                      for a in registry.providerById("segdet").algorithms()}}
raster = QgsRasterLayer(scene, "scene")
points = QgsVectorLayer(f"Point?crs={raster.crs().authid()}&field=label:integer", "clicks", "memory")
feature = QgsFeature(points.fields())
feature.setGeometry(QgsGeometry.fromPointXY(raster.extent().center()))
feature.setAttributes([1])
points.dataProvider().addFeatures([feature])


def run(params, feedback=None):
    try:
        processing.run("segdet:segment_with_prompts", params, context=QgsProcessingContext(),
                       feedback=feedback or QgsProcessingFeedback())
    except QgsProcessingException as e:
        return str(e)
    return None


tiles = QgsRasterLayer("type=xyz&url=http://127.0.0.1:9/%7Bz%7D/%7Bx%7D/%7By%7D.png&zmax=19&zmin=0", "tiles", "wms")
common = {"PROMPTS": points, "CHECKPOINT": checkpoint, "SEGDET": segdet, "OUTPUT_RASTER": "TEMPORARY_OUTPUT",
          "OUTPUT_VECTOR": "TEMPORARY_OUTPUT"}
out["wms"] = run({**common, "INPUT": tiles})


class CancelAt(QgsProcessingFeedback):
    """Cancels once segdet's progress reaches 40 %."""

    def __init__(self):
        super().__init__()
        self.seen = []
        self.progressChanged.connect(self._progress)

    def _progress(self, value):
        self.seen.append(value)
        if value >= 40:
            self.cancel()


feedback = CancelAt()
out["canceled"] = run({**common, "INPUT": raster}, feedback)
out["progress"] = feedback.seen
print(json.dumps(out), flush=True)
os._exit(0)  # QGIS's exit can crash headless after a canceled run; the answer is printed
