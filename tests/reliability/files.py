"""Messy folders made on the spot: every kind of bad or unusual file a user's data holds.

Each maker writes into a fresh folder and returns what a correct loader must do with each file, so the tests
read as a table: ``good`` samples train, ``skipped`` files are listed with a reason.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

W, H = 64, 48  # stored size of the generated images (EXIF-rotated ones display as H x W)


def _rgb(seed: int, w: int = W, h: int = H) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _mask(w: int = W, h: int = H) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 255
    return m


def truncated(fmt: str, seed: int = 0) -> bytes:
    """A real image file cut in half: the header (and so the size) reads, the pixels do not decode."""
    buf = io.BytesIO()
    Image.fromarray(_rgb(seed)).save(buf, fmt)
    data = buf.getvalue()
    return data[: len(data) // 2]


def exif_rotated_jpeg(path: Path, array: np.ndarray) -> None:
    """Stored as ``array``; EXIF orientation 6 says: display rotated 90 degrees clockwise."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(array).save(path, exif=exif, quality=95)


def sam_folder(root: Path) -> dict:
    """``root/images`` + ``root/masks`` with one sample per quirk. Returns {"good": [stems], "skipped": {file: why}}."""
    img, msk = root / "images", root / "masks"
    img.mkdir(parents=True)
    msk.mkdir(parents=True)
    good = []

    def pair(stem, image=None, mask=None, image_ext="png", mask_ext="png"):
        Image.fromarray(_rgb(len(good) + 1) if image is None else image).save(img / f"{stem}.{image_ext}")
        Image.fromarray(_mask() if mask is None else mask).save(msk / f"{stem}.{mask_ext}")
        good.append(stem)

    for i in range(4):
        pair(f"plain{i}")
    pair("grey", image=_rgb(10)[..., 0])                                            # mode L image
    pair("rgba", image=np.dstack([_rgb(11), np.full((H, W), 90, np.uint8)]))        # RGBA, translucent
    pair("empty_mask", mask=np.zeros((H, W), np.uint8))                             # no foreground at all
    pair("full_mask", mask=np.full((H, W), 255, np.uint8))                          # all foreground
    pair("jpeg_mask", mask_ext="jpg")                                               # JPEG grey levels
    Image.fromarray(_rgb(12)).save(img / "mask16.png")                              # 16-bit mask
    Image.fromarray(_mask().astype(np.uint16) * 257).save(msk / "mask16.png")
    good.append("mask16")
    Image.fromarray(_rgb(13)).save(img / "palette.png")                             # palette mask, index 1 = fg
    pal = Image.fromarray((_mask() > 0).astype(np.uint8), mode="P")
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.save(msk / "palette.png")
    good.append("palette")
    Image.fromarray(_rgb(16)).save(img / "labels01.png")                            # label map: 0 and 1 only
    Image.fromarray((_mask() > 0).astype(np.uint8)).save(msk / "labels01.png")
    good.append("labels01")
    exif_rotated_jpeg(img / "rotated.jpg", _rgb(14))                                # EXIF 6, mask rotated alike
    exif_rotated_jpeg(msk / "rotated.jpg", _mask())
    good.append("rotated")

    skipped = {}
    (img / "zero.png").write_bytes(b"")
    Image.fromarray(_mask()).save(msk / "zero.png")
    skipped["images/zero.png"] = "empty file"
    (img / "notes.jpg").write_text("this is not a picture\n")
    Image.fromarray(_mask()).save(msk / "notes.jpg")
    skipped["images/notes.jpg"] = "not an image"
    Image.fromarray(_rgb(15)).save(img / "orphan.png")
    skipped["images/orphan.png"] = "no mask"
    (img / "cut.jpg").write_bytes(truncated("JPEG"))
    Image.fromarray(_mask()).save(msk / "cut.png")
    skipped["images/cut.jpg"] = "unreadable"
    (img / "cutpng.png").write_bytes(truncated("PNG", 3))
    Image.fromarray(_mask()).save(msk / "cutpng.png")
    skipped["images/cutpng.png"] = "unreadable"
    Image.fromarray(_mask()).save(msk / "lonely.png")                               # a mask without image
    skipped["masks/lonely.png"] = "no image"
    (img / "README.txt").write_text("files that are not images by name are not samples\n")
    return {"good": sorted(good), "skipped": skipped}


def voc_xml(filename: str, w: int, h: int, objects) -> str:
    objs = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
        f"<ymax>{b[3]}</ymax></bndbox></object>" for n, b in objects)
    return (f"<annotation><filename>{filename}</filename><size><width>{w}</width><height>{h}</height>"
            f"<depth>3</depth></size>{objs}</annotation>")


def voc_folder(root: Path) -> dict:
    """``root/images`` + ``root/annotations`` (VOC XML). Returns {"good": [stems], "skipped": {file: why},
    "boxes": {stem: expected xyxy boxes (0-based continuous) after cleaning}}."""
    img, ann = root / "images", root / "annotations"
    img.mkdir(parents=True)
    ann.mkdir(parents=True)
    good, boxes = [], {}

    def sample(stem, objects, image=None, ext="png", size=(W, H)):
        (Image.fromarray(_rgb(len(good) + 1)) if image is None else image).save(img / f"{stem}.{ext}")
        ann.joinpath(f"{stem}.xml").write_text(voc_xml(f"{stem}.{ext}", *size, objects))
        good.append(stem)

    for i in range(4):
        sample(f"plain{i}", [("cat", (5 + i, 5, 30 + i, 30)), ("dog", (35, 10, 60, 40))])
    sample("grey", [("cat", (3, 3, 20, 20))], image=Image.fromarray(_rgb(20)[..., 0]))
    rgba = np.dstack([_rgb(21), np.full((H, W), 90, np.uint8)])
    sample("rgba", [("dog", (3, 3, 20, 20))], image=Image.fromarray(rgba))
    sample("img16", [("dog", (3, 3, 20, 20))], image=Image.fromarray(_rgb(22)[..., 0].astype(np.uint16) * 257))
    sample("palette", [("cat", (3, 3, 20, 20))], image=Image.fromarray(_rgb(23)).convert("P"))
    exif_rotated_jpeg(img / "rotated.jpg", _rgb(24))                                 # displays 48 wide, 64 high
    ann.joinpath("rotated.xml").write_text(voc_xml("rotated.jpg", H, W, [("cat", (5, 5, 40, 60))]))
    good.append("rotated")
    boxes["rotated"] = [[4, 4, 40, 60]]
    sample("background", [])                                                         # XML without objects
    sample("degenerate", [("cat", (30, 10, 29, 20)), ("cat", (40, 10, 20, 30)), ("dog", (5, 5, 25, 25))])
    boxes["degenerate"] = [[4, 4, 25, 25]]   # VOC is 1-based inclusive: xmax = xmin - 1 is zero wide, xmax < xmin
    sample("outside", [("cat", (-20, -5, 30, 30)), ("dog", (50, 40, 500, 400)), ("cat", (100, 100, 120, 120))])
    boxes["outside"] = [[0, 0, 30, 30], [49, 39, W, H]]                              # clipped; fully outside dropped
    sample("unknown_class", [("cat", (5, 5, 25, 25)), ("zebra", (30, 5, 50, 25))])
    boxes["unknown_class"] = [[4, 4, 25, 25]]                                        # with data.classes=[cat,dog]

    skipped = {}
    (img / "zero.png").write_bytes(b"")
    ann.joinpath("zero.xml").write_text(voc_xml("zero.png", W, H, [("cat", (5, 5, 20, 20))]))
    skipped["zero.png"] = "empty file"
    (img / "notes.jpg").write_text("not a picture\n")
    ann.joinpath("notes.xml").write_text(voc_xml("notes.jpg", W, H, [("cat", (5, 5, 20, 20))]))
    skipped["notes.jpg"] = "not an image"
    (img / "cut.jpg").write_bytes(truncated("JPEG"))
    ann.joinpath("cut.xml").write_text(voc_xml("cut.jpg", W, H, [("cat", (5, 5, 20, 20))]))
    skipped["cut.jpg"] = "unreadable"
    Image.fromarray(_rgb(30)).save(img / "broken.png")
    ann.joinpath("broken.xml").write_text("<annotation><filename>broken.png</filename><object><name>cat")
    skipped["broken.xml"] = "invalid annotation XML"
    ann.joinpath("orphan.xml").write_text(voc_xml("missing.jpg", W, H, [("cat", (5, 5, 20, 20))]))
    skipped["orphan.xml"] = "no image"
    ann.joinpath("nobox.xml").write_text(voc_xml("nobox.png", W, H, []).replace(
        "</annotation>", "<object><name>cat</name><bndbox><xmin>a</xmin></bndbox></object></annotation>"))
    Image.fromarray(_rgb(31)).save(img / "nobox.png")
    skipped["nobox.xml"] = "bndbox"
    return {"good": sorted(good), "skipped": skipped, "boxes": boxes}


def coco_missing_images(root: Path, present: int = 2, missing: int = 3) -> Path:
    """A COCO file naming ``present + missing`` images of which only ``present`` exist under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(present + missing):
        name = f"img{i}.png"
        if i < present:
            Image.fromarray(_rgb(40 + i)).save(root / name)
        images.append({"id": i + 1, "file_name": name, "width": W, "height": H})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [5, 5, 20, 20], "iscrowd": 0})
    ann = root / "ann.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "cat"}]}))
    return ann


def predict_inputs(folder: Path) -> dict:
    """Inputs for predict with awkward names, quirky formats and unreadable files.
    Returns {"names": {file name: expected output stem}, "skipped": [file names], "rotated": file name}."""
    folder.mkdir(parents=True)
    names = {}
    for i, (file, stem) in enumerate([("a b.png", "a b"), ("dup.jpg", "dup"), ("dup.png", "dup_2"),
                                      ("ünï.png", "ünï"), ("semi;colon$(x).png", "semi_colon__x_"),
                                      (".hidden.png", "hidden")]):
        Image.fromarray(_rgb(50 + i)).save(folder / file)
        names[file] = stem
    Image.fromarray(_rgb(60)[..., 0]).save(folder / "grey.png")
    Image.fromarray(np.dstack([_rgb(61), np.full((H, W), 90, np.uint8)])).save(folder / "rgba.png")
    exif_rotated_jpeg(folder / "rot.jpg", _rgb(62))
    names.update({"grey.png": "grey", "rgba.png": "rgba", "rot.jpg": "rot"})
    (folder / "zero.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("not a picture\n")
    (folder / "cut.jpg").write_bytes(truncated("JPEG"))
    (folder / "readme.txt").write_text("not an image by name: not an input\n")
    return {"names": names, "skipped": ["cut.jpg", "notes.jpg", "zero.png"], "rotated": "rot.jpg"}
