"""Remote scenes: a COG served over HTTP (a server on 127.0.0.1 in the test, with range requests) predicts exactly
what the local file does and resumes by the server's stamp; transient 503s pass by retries (segdet's probe and
GDAL's reads), and a 404, a 403, a server without range requests, a timeout and a file that is not a raster each
end in one line; s3:// goes through GDAL's own /vsis3/ (pointed at the same server)."""
from __future__ import annotations

import json

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

from segdet.errors import SegdetError  # noqa: E402
from segdet.scenes import remote  # noqa: E402
from tests.geo.conftest import cog_bytes, mask_of, predict  # noqa: E402
from tests.geo.server import RangeServer  # noqa: E402
from tests.reliability.cli import segdet, user_error  # noqa: E402


@pytest.fixture
def quick_retries(monkeypatch):
    """GDAL's retry settings as a user sets them, with a short delay so that the test stays quick."""
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "3")
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.05")


def test_a_remote_cog_predicts_what_the_local_file_does_and_resumes_by_its_stamp(geo_sam_ckpt, cog, local_prediction,
                                                                                 tmp_path, quick_retries):
    with RangeServer({"/data/lakes.tif": cog.read_bytes()}) as server:
        url = server.url("/data/lakes.tif") + "?token=s3cr3t"  # a signed URL: the outputs are named by its path
        out = tmp_path / "remote"
        assert predict(geo_sam_ckpt, url, out)["new"] == 1
        assert all(r[2] for r in server.requests if r[0] == "GET")  # every read a range request
        for rel in ("masks/lakes.tif", "vectors/lakes.geojson"):
            assert (out / rel).read_bytes() == (local_prediction / rel).read_bytes(), rel
        journal = [json.loads(line) for line in (out / ".segdet-predict.jsonl").read_text().splitlines()]
        assert journal[0]["settings"]["input"]["path"] == url and journal[1]["input"] == url
        etag = dict((k.lower(), v) for k, v in remote.request(url, first_byte=True)[1].items())["etag"]
        assert journal[1]["stamp"][0] == etag and journal[1]["stamp"][2] == cog.stat().st_size

        again = predict(geo_sam_ckpt, url, out, "resume=true")  # the same file on the server: nothing to redo
        assert again["new"] == 0 and again["resumed"] == 1

        with rasterio.open(cog) as src:  # the file changes on the server (a new ETag): predicted again
            flipped = src.read()[:, ::-1]
        server.files["/data/lakes.tif"] = cog_bytes(np.ascontiguousarray(flipped), cog, tmp_path / "lakes.tif")
        again = predict(geo_sam_ckpt, url, out, "resume=true")
        assert again["new"] == 1
    # what was predicted is the new file, read afresh (nothing of the old one cached by GDAL)
    predict(geo_sam_ckpt, tmp_path / "lakes.tif", tmp_path / "flipped")
    assert np.array_equal(mask_of(out / "masks/lakes.tif")[0], mask_of(tmp_path / "flipped/masks/lakes.tif")[0])


def test_a_503_passes_on_retry_in_the_probe_and_in_gdals_own_reads(cog, monkeypatch):
    monkeypatch.delenv("GDAL_HTTP_MAX_RETRY", raising=False)  # segdet's default (GDAL's own is no retry)
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.05")
    with rasterio.open(cog) as src:
        expected = src.read(window=((200, 260), (200, 300)))
    with RangeServer({"/lakes.tif": cog.read_bytes()}) as server:
        server.fail_next(2)
        scene = remote.open_url(server.url("/lakes.tif"))
        with scene:
            assert [r[0] for r in server.requests[:3]] == ["GET"] * 3  # 503, 503, then the answer
            server.fail_next(1)  # a block not read yet: GDAL's request fails once, and is retried
            got = scene.read((200, 200, 100, 60), channels_first=True)
        assert np.array_equal(got, expected)


def test_a_network_failure_mid_scene_ends_in_one_line_not_an_empty_tile(cog, monkeypatch):
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "1")
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.01")
    with RangeServer({"/lakes.tif": cog.read_bytes()}) as server:
        scene = remote.open_url(server.url("/lakes.tif"))
        with scene:
            server.fail_next(100)
            with pytest.raises(SegdetError, match=r"lakes\.tif: the server answered HTTP 503.*while reading pixels "
                                                  r"200\.\.300 x 200\.\.260\); resume=true continues"):
                scene.read((200, 200, 100, 60))
        server.fail_next(100)
        with pytest.raises(SegdetError, match=r"HTTP 503, also after 1 retries"):
            remote.open_url(server.url("/lakes.tif"))


def test_bad_urls_end_in_one_line(geo_sam_ckpt, cog, tmp_path, monkeypatch):
    files = {"/lakes.tif": cog.read_bytes(), "/secret.tif": cog.read_bytes(), "/slow.tif": cog.read_bytes(),
             "/notes.tif": b"not a raster, only text\n" * 40}
    with RangeServer(files) as server, RangeServer(files, ranges=False) as whole:
        server.forbidden.add("/secret.tif")
        server.slow["/slow.tif"] = 8
        # as users see them: a missing URL before the model loads, a file that is not a raster when it is opened
        for i, (url, words) in enumerate([(server.url("/missing.tif?sig=abc"), ["missing.tif: not found (HTTP 404)"]),
                                          (server.url("/notes.tif"), ["notes.tif: not a raster GDAL can read"])]):
            proc = segdet("predict", "task=sam", f"ckpt={geo_sam_ckpt}", f"input='{url}'",
                          f"hydra.run.dir={tmp_path / f'run{i}'}", "trainer.device=cpu")
            assert "sig=" not in user_error(proc, *words, alone=False)  # a signed URL's query is a credential
        for url, expected in [(server.url("/secret.tif"), r"secret\.tif: access denied \(HTTP 403\); give "
                                                          r"credentials by GDAL's settings \(GDAL_HTTP_HEADERS"),
                              (whole.url("/lakes.tif"), r"lakes\.tif: the server does not answer HTTP range "
                                                        r"requests .*download the file"),
                              (server.url("/slow.tif"), r"slow\.tif: no answer within 2 s \(GDAL_HTTP_TIMEOUT\)")]:
            with monkeypatch.context() as m, pytest.raises(SegdetError, match=expected):
                m.setenv("GDAL_HTTP_TIMEOUT", "2")  # a loaded machine answers the others in time
                remote.inputs(url)
        assert not any(path == "/lakes.tif" and rng != "bytes=0-0" for _, path, rng in whole.requests)


def test_s3_urls_are_read_by_gdals_own_driver(cog, monkeypatch):
    with RangeServer({"/bucket/scenes/lakes.tif": cog.read_bytes()}) as server:
        for key, value in {"AWS_S3_ENDPOINT": f"127.0.0.1:{server.port}", "AWS_HTTPS": "NO",
                           "AWS_VIRTUAL_HOSTING": "FALSE", "AWS_NO_SIGN_REQUEST": "YES"}.items():
            monkeypatch.setenv(key, value)
        url = "s3://bucket/scenes/lakes.tif"
        assert remote.inputs(url) == [remote.Path(url)] and remote.url_of(remote.inputs(url)[0]) == url
        with remote.open_url(url) as scene, rasterio.open(cog) as src:
            assert scene.crs == src.crs and scene.transform == src.transform
            assert np.array_equal(scene.read((0, 0, 64, 64), channels_first=True), src.read(window=((0, 64), (0, 64))))
        assert any(path.startswith("/bucket/scenes/lakes.tif") and rng for _, path, rng in server.requests)
        etag = remote.stamp(url)[0]
        assert etag and etag == remote.stamp(server.url("/bucket/scenes/lakes.tif"))[0]
        with pytest.raises(SegdetError, match=r"^s3://bucket/scenes/gone\.tif: not found \(HTTP 404\)$"):
            remote.open_url("s3://bucket/scenes/gone.tif")


def test_a_stac_item_in_a_bucket_and_gdal_signed_urls_go_through_gdals_own_requests(cog, stac_files, monkeypatch):
    from segdet.scenes import stac

    files = {path.replace("/items/", "/bucket/items/"): data for path, data in stac_files.items()}
    with RangeServer(files) as server, rasterio.open(cog) as src:
        for key, value in {"AWS_S3_ENDPOINT": f"127.0.0.1:{server.port}", "AWS_HTTPS": "NO",
                           "AWS_VIRTUAL_HOSTING": "FALSE", "AWS_NO_SIGN_REQUEST": "YES"}.items():
            monkeypatch.setenv(key, value)
        with stac.open_input("s3://bucket/items/item.json", asset=None, bands=["red", "green", "blue"]) as scene:
            assert np.array_equal(scene.read((0, 0, 64, 64), channels_first=True),
                                  src.read(window=((0, 64), (0, 64))))
        # where GDAL signs its requests (Planetary Computer), segdet makes none of its own: GDAL's answer the stamp
        monkeypatch.setenv("VSICURL_PC_URL_SIGNING", "YES")
        server.reset_counts()
        url = server.url("/bucket/items/visual.tif")
        assert remote.stamp(url)[0] == remote.stamp("s3://bucket/items/visual.tif")[0]
        with remote.open_url(url) as scene:
            assert scene.width == src.width
        assert not any(rng == "bytes=0-0" for _, _, rng in server.requests)


def test_gdal_settings_in_the_environment_win_over_segdets_defaults(monkeypatch):
    monkeypatch.delenv("GDAL_HTTP_MAX_RETRY", raising=False)
    monkeypatch.delenv("CPL_VSIL_CURL_ALLOWED_EXTENSIONS", raising=False)
    options = remote.gdal_options(["https://example.com/a/scene.TIF?x=1"])
    assert options["GDAL_HTTP_MAX_RETRY"] == "4" and options["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"
    assert options["CPL_VSIL_CURL_ALLOWED_EXTENSIONS"] == ".msk,.ovr,.tif"
    assert "CPL_VSIL_CURL_ALLOWED_EXTENSIONS" not in remote.gdal_options(["https://example.com/download?id=3"])
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "9")
    assert "GDAL_HTTP_MAX_RETRY" not in remote.gdal_options(["https://example.com/a.tif"])
    assert remote.vsi_path("gs://b/k.tif") == "/vsigs/b/k.tif" and remote.url_of("/vsis3/b/k.tif") == "s3://b/k.tif"
    assert str(remote.name_path(remote.Path("https://h/x/scene.tif?sig=1"))) == "scene.tif"
