"""docs/qgis.png: segdet's QGIS plugin at work, headless. Run by QGIS's own Python (Debian: python3 with
python3-qgis): the plugin is loaded from this checkout, ``segdet:segment_with_prompts`` runs on a scene with box
prompts, and the scene, the prompts and the polygons it returned are drawn by QGIS's map renderer.

    QT_QPA_PLATFORM=offscreen python3 scripts/qgis_figure.py SCENE PROMPTS CKPT SEGDET docs/qgis.png

SCENE and PROMPTS: e.g. the generated water scene and box prompts of ``scripts/scene_figure.py --work DIR``
(DIR/lakes.tif, DIR/lakes.geojson); SEGDET: the segdet executable (e.g. .venv/bin/segdet). The docs' figure was
then reduced to 192 colours by Pillow (``Image.quantize(192, Image.Quantize.MEDIANCUT)``): half the bytes.
"""
import sys
from pathlib import Path

from qgis.core import (Qgis, QgsApplication, QgsFillSymbol, QgsMapRendererParallelJob, QgsMapSettings,
                       QgsProcessingContext, QgsProcessingFeedback, QgsRasterLayer, QgsVectorLayer)
from qgis.PyQt.QtCore import QSize, Qt
from qgis.PyQt.QtGui import QColor, QFont, QPainter

SIDE = 760
CAPTION = 34


def main() -> None:
    scene, prompts, ckpt, segdet, png = sys.argv[1:6]
    QgsApplication.setPrefixPath("/usr", True)
    app = QgsApplication([], False)
    app.initQgis()
    sys.path[:0] = [str(Path(__file__).resolve().parents[1]), "/usr/share/qgis/python/plugins"]
    from processing.core.Processing import Processing

    Processing.initialize()
    import processing
    import segdet_qgis

    plugin = segdet_qgis.classFactory(None)
    plugin.initProcessing()
    raster = QgsRasterLayer(scene, "scene")
    boxes = QgsVectorLayer(prompts, "prompts", "ogr")
    result = processing.run("segdet:segment_with_prompts",
                            {"INPUT": raster, "PROMPTS": boxes, "CHECKPOINT": ckpt, "SEGDET": segdet,
                             "OUTPUT_RASTER": "TEMPORARY_OUTPUT", "OUTPUT_VECTOR": "TEMPORARY_OUTPUT"},
                            context=QgsProcessingContext(), feedback=QgsProcessingFeedback())
    polygons = QgsVectorLayer(result["OUTPUT_VECTOR"], "polygons", "ogr")
    polygons.setRenderer(polygons.renderer().clone())
    polygons.renderer().setSymbol(QgsFillSymbol.createSimple(
        {"color": "255,210,60,70", "outline_color": "255,210,60,255", "outline_width": "0.5"}))
    boxes.renderer().setSymbol(QgsFillSymbol.createSimple(
        {"color": "0,0,0,0", "outline_color": "255,255,255,255", "outline_width": "0.5", "outline_style": "dash"}))

    settings = QgsMapSettings()
    settings.setLayers([polygons, boxes, raster])  # top first
    settings.setDestinationCrs(raster.crs())
    settings.setExtent(raster.extent())
    settings.setOutputSize(QSize(SIDE, SIDE))
    settings.setBackgroundColor(QColor("white"))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage()

    # the caption below the map: what was run, and what came back
    from qgis.PyQt.QtGui import QImage

    out = QImage(SIDE, SIDE + CAPTION, QImage.Format_ARGB32)
    out.fill(QColor("white"))
    painter = QPainter(out)
    painter.drawImage(0, 0, image)
    painter.setFont(QFont("DejaVu Sans", 10))
    painter.setPen(QColor("black"))
    painter.drawText(8, SIDE, SIDE - 16, CAPTION, Qt.AlignVCenter,
                     f"QGIS {Qgis.QGIS_VERSION.split('-')[0]}, segdet:segment_with_prompts: "
                     f"{polygons.featureCount()} polygons (yellow) from {boxes.featureCount()} box prompts (white)")
    painter.end()
    out.save(png)
    print(f"wrote {png}: {polygons.featureCount()} polygons, {boxes.featureCount()} prompts")
    plugin.unload()


if __name__ == "__main__":
    main()
