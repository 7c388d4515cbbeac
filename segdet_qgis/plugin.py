"""The QGIS plugin: registers the segdet Processing provider (also for qgis_process, through initProcessing)."""
from __future__ import annotations

from qgis.core import QgsApplication

from .provider import SegdetProvider


class SegdetPlugin:
    def __init__(self, iface=None):
        self.iface = iface
        self.provider = None

    def initProcessing(self):
        if self.provider is None:
            self.provider = SegdetProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):
        self.initProcessing()

    def unload(self):
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
