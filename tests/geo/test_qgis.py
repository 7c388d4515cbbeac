"""The QGIS plugin in Debian's QGIS, headless: ``make qgis-plugin``'s zip installed into a fresh profile and
enabled, ``qgis_process`` lists the provider's four algorithms and runs each on generated scenes: segment_with_prompts
(prompts in another CRS: reprojected to the raster's, so the mask is segdet's own with the prompts in the raster's
CRS), segment_everything (also with an AOI layer: segdet's own ``aoi=`` predict, the area's window of the scene),
class_map (segdet's own ``predict task=semantic``) and change on three dates of the generated water stack (segdet's
own ``stack=true stack.change=first``: the change map of the first and last dates, its polygons and the areas
table, read back from the layers QGIS wrote); the outputs are layers in the scene's CRS. QGIS's Python checks each
algorithm's parameters, a layer that is not a file refused in one line, and Cancel (tests/geo/qgis_check.py).
Skipped, with the reason, where QGIS is not installed."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
pyogrio = pytest.importorskip("pyogrio")

from segdet.scenes.synthetic import CRS, ORIGIN, PIXEL, write_scene  # noqa: E402
from tests.geo.conftest import predict  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
QGIS_PROCESS = shutil.which("qgis_process.bin")  # Debian 12's qgis_process wrapper passes a flag 3.22 refuses
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin")
SEGDET = str(Path(sys.executable).with_name("segdet"))
ALGORITHMS = ("segdet:change", "segdet:class_map", "segdet:segment_everything", "segdet:segment_with_prompts")
pytestmark = pytest.mark.skipif(QGIS_PROCESS is None, reason="QGIS is not installed (apt-get install qgis "
                                                             "python3-qgis; .ci/run installs it)")
BOXES = [(20, 30, 120, 130), (150, 60, 280, 200)]  # scene pixels


@pytest.fixture(scope="module")
def qgis(tmp_path_factory) -> dict:
    """A fresh QGIS profile with the plugin from ``make qgis-plugin`` installed and enabled: the environment."""
    home = tmp_path_factory.mktemp("qgis_home")
    env = {**os.environ, "HOME": str(home), "QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": str(home)}
    subprocess.run(["make", "-s", "qgis-plugin"], cwd=ROOT, check=True, capture_output=True)
    plugins = home / ".local/share/QGIS/QGIS3/profiles/default/python/plugins"
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(ROOT / "dist/segdet_qgis.zip") as z:
        assert {Path(n).parts[0] for n in z.namelist()} == {"segdet_qgis"}
        z.extractall(plugins)
    process(env, "plugins", "enable", "segdet_qgis")
    return {**env, "PLUGINS": str(plugins)}


def process(env, *args) -> subprocess.CompletedProcess:
    proc = subprocess.run([QGIS_PROCESS, *args], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("qgis_scene")
    write_scene(folder / "lakes.tif", 300, 260, seed=5)
    return folder / "lakes.tif"


def boxes_geojson(path: Path, crs: str) -> Path:
    from rasterio.warp import transform_geom

    def box(x0, y0, x1, y1):
        xs, ys = [ORIGIN[0] + x * PIXEL for x in (x0, x1)], [ORIGIN[1] - y * PIXEL for y in (y0, y1)]
        return {"type": "Polygon", "coordinates": [[[xs[0], ys[0]], [xs[1], ys[0]], [xs[1], ys[1]], [xs[0], ys[1]],
                                                    [xs[0], ys[0]]]]}
    features = [{"type": "Feature", "properties": {}, "geometry": transform_geom(CRS, crs, box(*b))} for b in BOXES]
    doc = {"type": "FeatureCollection", "features": features}
    if crs != "EPSG:4326":
        doc["crs"] = {"type": "name", "properties": {"name": crs}}
    path.write_text(json.dumps(doc))
    return path


def aoi_geojson(path: Path) -> Path:
    """A rectangle on half pixels of the scene, pixels 60-200 × 40-150 (QGIS writes the layer anew in the raster's
    CRS: no edge falls on a pixel centre)."""
    x0, y0, x1, y1 = 60.5, 40.5, 200.5, 150.5
    corners = ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))
    ring = [[ORIGIN[0] + x * PIXEL, ORIGIN[1] - y * PIXEL] for x, y in corners]
    path.write_text(json.dumps({"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": CRS}},
                                "features": [{"type": "Feature", "properties": {},
                                              "geometry": {"type": "Polygon", "coordinates": [ring]}}]}))
    return path


def layer_crs(path: Path) -> str:
    return str(pyogrio.read_info(str(path))["crs"])


def test_qgis_process_lists_the_four_algorithms(qgis):
    listed = process(qgis, "list").stdout
    assert all(f"\t{a}\t" in listed for a in ALGORITHMS), listed[-2000:]


@pytest.mark.slow
def test_segment_with_prompts_in_qgis_is_segdets_mask_with_the_prompts_reprojected(qgis, scene, geo_sam_ckpt,
                                                                                    tmp_path):
    prompts = boxes_geojson(tmp_path / "boxes_wgs84.geojson", "EPSG:4326")
    process(qgis, "run", "segdet:segment_with_prompts", "--", f"INPUT={scene}", f"PROMPTS={prompts}",
            f"CHECKPOINT={geo_sam_ckpt}", f"SEGDET={SEGDET}", f"OUTPUT_RASTER={tmp_path / 'mask.tif'}",
            f"OUTPUT_VECTOR={tmp_path / 'polygons.gpkg'}")
    # the reference: segdet itself, the same boxes written in the raster's CRS
    reference = tmp_path / "reference"
    predict(geo_sam_ckpt, scene, reference, f"prompts={boxes_geojson(tmp_path / 'boxes_utm.geojson', CRS)}")
    with rasterio.open(tmp_path / "mask.tif") as got, rasterio.open(reference / "masks/lakes.tif") as want, \
            rasterio.open(scene) as src:
        assert got.crs == src.crs and got.transform == src.transform and got.shape == src.shape
        mask = got.read(1)
        assert mask.any() and np.array_equal(mask, want.read(1))
    assert layer_crs(tmp_path / "polygons.gpkg") == CRS
    assert pyogrio.read_info(str(tmp_path / "polygons.gpkg"))["features"] == \
        pyogrio.read_info(str(reference / "vectors/lakes.geojson"))["features"] > 0


@pytest.mark.slow
def test_segment_everything_in_qgis_writes_layers_in_the_scenes_crs(qgis, scene, geo_sam_ckpt, tmp_path):
    options = "amg.points_per_side=4 amg.pred_iou_thresh=0 amg.stability_score_thresh=0"
    process(qgis, "run", "segdet:segment_everything", "--", f"INPUT={scene}", f"CHECKPOINT={geo_sam_ckpt}",
            f"SEGDET={SEGDET}", f"OPTIONS={options}", f"OUTPUT_RASTER={tmp_path / 'ids.tif'}",
            f"OUTPUT_VECTOR={tmp_path / 'instances.gpkg'}")
    with rasterio.open(tmp_path / "ids.tif") as got, rasterio.open(scene) as src:
        assert got.crs == src.crs and got.transform == src.transform and got.read(1).max() > 0
    assert layer_crs(tmp_path / "instances.gpkg") == CRS
    assert pyogrio.read_info(str(tmp_path / "instances.gpkg"))["features"] > 0


@pytest.mark.skipif(SYSTEM_PYTHON is None, reason="no system python3 with QGIS's bindings")
def test_parameters_a_tile_layer_refused_and_cancel_in_qgis(qgis, scene, tmp_path):
    fake = tmp_path / "segdet"
    fake.write_text(f"#!/bin/sh\nexec {sys.executable} {Path(__file__).with_name('fake_segdet.py')} \"$@\"\n")
    fake.chmod(0o755)
    env = {**qgis, "FAKE_PIDS": str(tmp_path / "pids")}
    (tmp_path / "model.pt").write_bytes(b"")  # the stand-in reads no checkpoint; the plugin checks it exists
    proc = subprocess.run([SYSTEM_PYTHON, str(Path(__file__).with_name("qgis_check.py")), qgis["PLUGINS"], str(fake),
                           str(tmp_path / "model.pt"), str(scene)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    params = {k.split(":")[1]: v for k, v in out["parameters"].items()}
    assert sorted(out["parameters"]) == list(ALGORITHMS)
    for alg in ("segment_with_prompts", "segment_everything", "class_map"):
        assert {"INPUT", "CHECKPOINT", "SEGDET", "OUTPUT_RASTER", "OUTPUT_VECTOR"} <= set(params[alg])
    assert "PROMPTS" in params["segment_with_prompts"]
    assert {"AOI"} <= set(params["segment_everything"]) & set(params["class_map"]) & set(params["change"])
    assert {"INPUTS", "OUTPUT_RASTER", "OUTPUT_VECTOR", "OUTPUT_TABLE"} <= set(params["change"])
    assert "INPUT: layer 'tiles' is a wms layer, not a file or URL" in out["wms"]
    assert out["canceled"] == "canceled" and max(out["progress"]) >= 40
    pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or \
            Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"


@pytest.mark.slow
def test_segment_everything_with_an_aoi_layer_is_segdets_aoi_predict(qgis, scene, geo_sam_ckpt, tmp_path):
    aoi = aoi_geojson(tmp_path / "aoi.geojson")
    options = "amg.points_per_side=4 amg.pred_iou_thresh=0 amg.stability_score_thresh=0"
    process(qgis, "run", "segdet:segment_everything", "--", f"INPUT={scene}", f"CHECKPOINT={geo_sam_ckpt}",
            f"AOI={aoi}", f"SEGDET={SEGDET}", f"OPTIONS={options}", f"OUTPUT_RASTER={tmp_path / 'ids.tif'}",
            f"OUTPUT_VECTOR={tmp_path / 'instances.gpkg'}")
    reference = tmp_path / "reference"
    predict(geo_sam_ckpt, scene, reference, f"aoi.path={aoi}", "prompts=grid", *options.split())
    with rasterio.open(tmp_path / "ids.tif") as got, rasterio.open(reference / "masks/lakes.tif") as want, \
            rasterio.open(scene) as src:
        assert got.crs == src.crs and got.shape == (111, 141)
        assert got.transform == src.transform @ rasterio.Affine.translation(60, 40)
        assert np.array_equal(got.read(1), want.read(1))
    assert layer_crs(tmp_path / "instances.gpkg") == CRS


def direct_predict(task: str, ckpt: str, source, out: Path, *extra: str) -> None:
    """``segdet predict task=TASK`` in this process, on the CPU: the reference a QGIS run is compared with."""
    from segdet.commands import predict as predict_cmd
    from tests.conftest import compose_cfg

    cfg = compose_cfg("predict", [f"task={task}", f"ckpt={ckpt}", f"input.path='{source}'", f"output={out}",
                                  "trainer.progress=false", "trainer.device=cpu", *extra])
    predict_cmd.run(cfg, out.parent / f"run_{out.name}")


def classes_of(path: Path) -> list[str]:
    """The ``class`` field of every feature of a vector layer, read with pyogrio."""
    fields = pyogrio.read_info(str(path))["fields"]
    assert "class" in list(fields), fields
    return [str(c) for c in pyogrio.raw.read(str(path), columns=["class"], read_geometry=False)[3][0]]


@pytest.mark.slow
@pytest.mark.parametrize("with_aoi", [False, True], ids=["scene", "aoi"])
def test_class_map_in_qgis_is_segdets_semantic_predict(qgis, scene, geo_semantic_ckpt, with_aoi, tmp_path):
    aoi = [aoi_geojson(tmp_path / "aoi.geojson")] if with_aoi else []
    process(qgis, "run", "segdet:class_map", "--", f"INPUT={scene}", f"CHECKPOINT={geo_semantic_ckpt}",
            *(f"AOI={a}" for a in aoi), f"SEGDET={SEGDET}", "OPTIONS=trainer.device=cpu",
            f"OUTPUT_RASTER={tmp_path / 'classes.tif'}", f"OUTPUT_VECTOR={tmp_path / 'classes.gpkg'}")
    reference = tmp_path / "reference"
    direct_predict("semantic", geo_semantic_ckpt, scene, reference, *(f"aoi.path={a}" for a in aoi))
    with rasterio.open(tmp_path / "classes.tif") as got, rasterio.open(reference / "masks/lakes.tif") as want, \
            rasterio.open(scene) as src:
        window = (src.transform @ rasterio.Affine.translation(60, 40), (111, 141)) if aoi else \
            (src.transform, src.shape)
        assert got.crs == src.crs == CRS and (got.transform, got.shape) == window
        classes = json.loads(want.tags()["classes"])
        band = got.read(1)
        assert np.array_equal(band, want.read(1)) and len(np.unique(band)) > 1
    assert layer_crs(tmp_path / "classes.gpkg") == CRS
    found = classes_of(tmp_path / "classes.gpkg")
    assert found and set(found) <= set(classes[1:])  # no polygon of the background
    assert sorted(found) == sorted(classes_of(reference / "vectors/lakes.geojson"))


@pytest.fixture(scope="module")
def dated(tmp_path_factory) -> list[Path]:
    """Three dates of the generated water stack (the lakes in a drought, then a flood), last date first."""
    from segdet.scenes import water_stack

    folder = tmp_path_factory.mktemp("qgis_stack")
    water_stack.write_stack(folder, size=96)
    return [folder / f"{water_stack.DATES[k]}.tif" for k in (4, 0, 2)]


@pytest.mark.slow
@pytest.mark.parametrize("task", ["semantic", "sam"])  # the algorithm's TASK choices, in its order
def test_change_in_qgis_is_segdets_stack_predict(qgis, dated, task, request, tmp_path):
    ckpt = request.getfixturevalue(f"geo_{task}_ckpt")
    inputs = [f"INPUTS={p}" for p in dated]
    process(qgis, "run", "segdet:change", "--", *inputs, f"TASK={['semantic', 'sam'].index(task)}",
            f"CHECKPOINT={ckpt}", f"SEGDET={SEGDET}", "OPTIONS=trainer.device=cpu",
            f"OUTPUT_RASTER={tmp_path / 'change.tif'}", f"OUTPUT_VECTOR={tmp_path / 'change.gpkg'}",
            f"OUTPUT_TABLE={tmp_path / 'areas.gpkg'}")
    listing = tmp_path / "frames.txt"
    listing.write_text("".join(f"{p}\n" for p in dated))
    reference = tmp_path / "reference"
    direct_predict(task, ckpt, listing, reference, "stack.enabled=true", "stack.change=first")
    first, last = sorted(p.stem for p in dated)[::2]
    with rasterio.open(tmp_path / "change.tif") as got, \
            rasterio.open(reference / f"change/{first}_{last}.tif") as want, rasterio.open(dated[0]) as src:
        assert got.crs == src.crs == CRS and got.transform == src.transform and got.shape == src.shape
        assert got.count == want.count and got.descriptions == want.descriptions
        codes = got.read()
        assert np.array_equal(codes, want.read()) and set(np.unique(codes)) <= {0, 1, 2, 3}
        assert {1, 2} & set(np.unique(codes))  # something changed between the first and the last date
    assert layer_crs(tmp_path / "change.gpkg") == CRS
    changed = classes_of(tmp_path / "change.gpkg")
    assert changed and sorted(changed) == sorted(classes_of(reference / f"change/{first}_{last}.geojson"))
    with open(reference / "areas.csv", newline="") as f:
        want_rows = [(r["date"], r["class"], float(r["area_m2"]), int(r["count"])) for r in csv.DictReader(f)]
    table = pyogrio.raw.read(str(tmp_path / "areas.gpkg"), read_geometry=False)
    columns = dict(zip(table[0]["fields"], table[3]))
    got_rows = [(str(d), str(c), float(a), int(n)) for d, c, a, n in
                zip(columns["date"], columns["class"], columns["area_m2"], columns["count"])]
    assert want_rows and got_rows == want_rows
