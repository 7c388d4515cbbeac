"""segdet for QGIS: a Processing provider that runs the segdet command line (installed separately, in its own
Python environment) on QGIS layers. This package imports QGIS only: no torch, no segdet."""


def classFactory(iface):  # noqa: N802 -- QGIS's plugin entry point
    from .plugin import SegdetPlugin

    return SegdetPlugin(iface)
