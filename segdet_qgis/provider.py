"""The Processing provider "segdet": its four algorithms and its one setting, the segdet executable (Processing >
Options > Providers > segdet), which every algorithm's SEGDET parameter falls back to."""
from __future__ import annotations

import os

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms import ALGORITHMS, SETTING

ICON = os.path.join(os.path.dirname(__file__), "icon.svg")


class SegdetProvider(QgsProcessingProvider):
    def id(self):
        return "segdet"

    def name(self):
        return "segdet"

    def longName(self):
        return "segdet: Segment Anything, class maps and change on rasters"

    def icon(self):
        return QIcon(ICON)

    def svgIconPath(self):
        return ICON

    def load(self):
        try:
            from processing.core.ProcessingConfig import ProcessingConfig, Setting
        except ImportError:  # no Processing plugin: the setting is not offered, SEGDET or PATH still work
            return super().load()
        ProcessingConfig.settingIcons[self.name()] = self.icon()
        ProcessingConfig.addSetting(Setting(self.name(), SETTING, "segdet executable (empty: segdet on PATH)", "",
                                            valuetype=Setting.FILE))
        ProcessingConfig.readSettings()
        return super().load()

    def unload(self):
        try:
            from processing.core.ProcessingConfig import ProcessingConfig
        except ImportError:
            return
        ProcessingConfig.removeSetting(SETTING)

    def loadAlgorithms(self):
        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm())
