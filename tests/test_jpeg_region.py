"""pynas._jpeg, the streaming loader's region JPEG decoder (csrc/jpeg/region_decode.cpp), against Pillow.

Where libjpeg-turbo's headers exist the build makes pynas._jpeg; CI builds with PYNAS_JPEG=1 so a
missing module is a failure there, not a skip.
"""
from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from pynas.data import decode
from pynas.data.options import data_options
from pynas.data.stream import _sample_uniforms

Image = pytest.importorskip("PIL.Image")

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("PYNAS_DATA", REPO.parent / "shared" / "data"))
CIFAR_TRAIN = DATA_DIR / "cifar10" / "train"

if os.environ.get("PYNAS_JPEG", "").strip().lower() in {"1", "true", "yes", "on"}:
    if not decode.libjpeg_available():
        raise RuntimeError("PYNAS_JPEG=1 but pynas._jpeg is not importable: the build did not make it")
jpeg = pytest.importorskip("pynas._jpeg", reason="pynas was built without libjpeg-turbo (pynas._jpeg)")


def _photo(cls="cat", index=3, size=(500, 375), *, mode="RGB", **save) -> bytes:
    if not CIFAR_TRAIN.is_dir():
        pytest.skip(f"needs the CIFAR-10 JPEG folder at {CIFAR_TRAIN} (real photographs)")
    image = Image.open(CIFAR_TRAIN / cls / f"{index:04d}.jpg").convert("RGB").resize(size, Image.Resampling.BICUBIC)
    if mode != "RGB":
        image = image.convert(mode)
    out = io.BytesIO()
    image.save(out, format="JPEG", **{"quality": 90, **save})
    return out.getvalue()


def _pillow_full(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _pixels(raw: bytes, width: int, height: int) -> np.ndarray:
    return np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3)


BOXES = [(0, 0, 500, 375), (37, 11, 301, 290), (250, 100, 500, 375), (0, 200, 120, 375), (123.4, 56.7, 345.6, 298.1)]


@pytest.mark.parametrize("box", BOXES)
@pytest.mark.parametrize("subsampling", [0, 2])  # 4:4:4 and 4:2:0 (iMCUs of 8 and 16 pixels)
def test_full_scale_region_is_the_full_decode_cut(box, subsampling):
    """At scale 1 the region decode's pixels inside the box are exactly the full decode's pixels there."""
    data = _photo(subsampling=subsampling)
    pixels, width, height, left, top, sx, sy = jpeg.decode_region(data, box, (10**6, 10**6))
    assert (sx, sy) == (1.0, 1.0)
    full = _pillow_full(data)
    assert left <= box[0] and top <= int(box[1]) and left + width >= box[2] and top + height >= box[3] - 1
    assert width < 500 or box[2] - box[0] > 380  # columns outside the box were not decoded
    region = _pixels(pixels, width, height)
    # Inside the box (what the resize reads); the part's outermost pixels may be upsampled differently.
    x0, y0, x1, y1 = int(box[0]), int(box[1]), int(np.ceil(box[2])), int(np.ceil(box[3]))
    np.testing.assert_array_equal(region[y0 - top:y1 - top, x0 - left:x1 - left], full[y0:y1, x0:x1])


@pytest.mark.parametrize("box, size, scale", [
    ((0, 0, 500, 375), (224, 224), 1.0),  # 375 / 2 < 224: full scale
    ((0, 0, 500, 375), (180, 180), 0.5),
    ((0, 0, 500, 375), (90, 90), 0.25),
    ((0, 0, 500, 375), (40, 40), 0.125),
    ((100, 50, 300, 250), (96, 96), 0.5),
    ((100, 50, 300, 250), (101, 96), 1.0),
])
def test_power_of_two_scale_is_the_smallest_that_keeps_the_box_at_least_the_output(box, size, scale):
    _, width, height, left, top, sx, sy = jpeg.decode_region(_photo(), box, size, powers_of_two=True)
    # The decoded size is the source's rounded up, so the ratio is the scale up to that rounding.
    assert sx == pytest.approx(scale, abs=0.01) and sy == pytest.approx(scale, abs=0.01)
    assert width >= size[0] and height >= size[1]


@pytest.mark.parametrize("powers_of_two", [True, False])
@pytest.mark.parametrize("flip", [False, True])
def test_crop_equals_pillow_resize_of_the_decoded_region(powers_of_two, flip):
    """decode_crop's resize is Pillow's BILINEAR resize with a box, within one level, on the same pixels."""
    rng = np.random.default_rng(0)
    data = _photo("ship", 5, (640, 480))
    diffs = []
    for _ in range(12):
        w, h = rng.uniform(60, 640), rng.uniform(60, 480)
        x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
        box = (x, y, x + w, y + h)
        size = (int(rng.integers(16, 240)), int(rng.integers(16, 240)))
        pixels, width, height, left, top, sx, sy = jpeg.decode_region(data, box, size, powers_of_two=powers_of_two)
        region = Image.frombuffer("RGB", (width, height), pixels, "raw", "RGB", 0, 1)
        inner = (max(0.0, box[0] * sx - left), max(0.0, box[1] * sy - top), min(width, box[2] * sx - left),
                 min(height, box[3] * sy - top))
        expected = np.asarray(region.resize(size, Image.Resampling.BILINEAR, box=inner, reducing_gap=None))
        if flip:
            expected = expected[:, ::-1]
        out = _pixels(jpeg.decode_crop(data, box, size, flip, powers_of_two), *size)
        diffs.append(np.abs(out.astype(np.int16) - expected))
    assert max(d.max() for d in diffs) <= 1
    assert np.mean([d.mean() for d in diffs]) < 0.1


def test_decode_sample_matches_the_pillow_path():
    """The loader's sample through libjpeg and through Pillow (full decode): the same crop, close pixels."""
    data = _photo("airplane", 7, (500, 375))
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"pynas-jpeg-{os.getpid()}.JPEG"
    path.write_bytes(data)
    try:
        for position in range(8):
            u = _sample_uniforms(5, 0, position)
            ours = decode.decode_sample(str(path), train=True, image_size=224, resize_size=256, uniforms=u,
                                        decoder="libjpeg")
            full = decode.decode_sample(str(path), train=True, image_size=224, resize_size=256, uniforms=u,
                                        decoder="pillow", reduce=False)
            assert ours.shape == full.shape == (224, 224, 3) and ours.dtype == np.uint8
            diff = np.abs(ours.astype(np.int16) - full)
            # A reduced DCT scale is another (antialiased) downscale than the full decode's resize.
            assert diff.mean() < 2.5, position
        for resize in (256, 300):
            ours = decode.decode_sample(str(path), train=False, image_size=224, resize_size=resize, uniforms=None,
                                        decoder="libjpeg")
            full = decode.decode_sample(str(path), train=False, image_size=224, resize_size=resize, uniforms=None,
                                        decoder="pillow", reduce=False)
            assert np.abs(ours.astype(np.int16) - full).mean() < 2.5
    finally:
        path.unlink()


def test_grey_progressive_and_cmyk_files(tmp_path):
    cases = {
        "grey": _photo(mode="L"),
        "progressive": _photo(progressive=True),
        "cmyk": _photo(mode="CMYK"),
    }
    for name, data in cases.items():
        path = tmp_path / f"{name}.jpg"
        path.write_bytes(data)
        ours = decode.decode_sample(str(path), train=False, image_size=64, resize_size=73, uniforms=None,
                                    decoder="libjpeg")
        pillow = decode.decode_sample(str(path), train=False, image_size=64, resize_size=73, uniforms=None,
                                      decoder="pillow")
        assert ours.shape == (64, 64, 3)
        assert np.abs(ours.astype(np.int16) - pillow).mean() < 2.5, name
        if name == "grey":
            assert (ours[..., 0] == ours[..., 1]).all() and (ours[..., 1] == ours[..., 2]).all()
    with pytest.raises(NotImplementedError, match="CMYK"):
        jpeg.decode_crop(cases["cmyk"], (0, 0, 10, 10), (4, 4))


def test_bad_files_and_arguments():
    data = _photo()
    with pytest.raises(ValueError, match="empty file"):
        jpeg.decode_crop(b"", (0, 0, 1, 1), (1, 1))
    with pytest.raises(ValueError):
        jpeg.decode_crop(b"\xff\xd8\xff\xe0" + bytes(100) + b"\xff\xd9", (0, 0, 1, 1), (1, 1))
    with pytest.raises(ValueError, match="not inside the 500x375 image"):
        jpeg.decode_crop(data, (0, 0, 501, 375), (8, 8))
    with pytest.raises(ValueError, match="not inside"):
        jpeg.decode_crop(data, (10, 10, 10, 20), (8, 8))
    with pytest.raises(ValueError, match="size must be"):
        jpeg.decode_crop(data, (0, 0, 10, 10), (0, 8))
    with pytest.raises(TypeError):
        jpeg.decode_crop("not bytes", (0, 0, 10, 10), (8, 8))
    with pytest.raises(TypeError):
        jpeg.decode_crop(data, (0, 0, 10), (8, 8))
    # Cut short: no end marker, so not decoded here (rows below a box would go unread)...
    with pytest.raises(NotImplementedError, match="end-of-image"):
        jpeg.decode_crop(data[: len(data) // 2], (0, 0, 10, 10), (8, 8))
    # ... and the loader's sample falls back to Pillow, which reports the truncation.
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"pynas-cut-{os.getpid()}.JPEG"
    path.write_bytes(data[: len(data) // 2])
    try:
        with pytest.raises(decode.DecodeError, match="truncated"):
            decode.decode_sample(str(path), train=False, image_size=8, resize_size=9, uniforms=None,
                                 decoder="libjpeg")
        # Padding after the end marker: also the Pillow way, and readable.
        path.write_bytes(data + bytes(200))
        out = decode.decode_sample(str(path), train=False, image_size=8, resize_size=9, uniforms=None,
                                   decoder="libjpeg")
        assert out.shape == (8, 8, 3)
    finally:
        path.unlink()


def test_threads_give_the_same_pixels():
    """The decoder releases the GIL and keeps no state between calls."""
    data = [_photo("cat", i, (500, 375)) for i in range(4)]
    boxes = [(10 * i, 5 * i, 300 + 10 * i, 250 + 5 * i) for i in range(4)]
    serial = [jpeg.decode_crop(d, b, (112, 112)) for d, b in zip(data, boxes)]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda k: jpeg.decode_crop(data[k % 4], boxes[k % 4], (112, 112)), range(32)))
    assert all(threaded[k] == serial[k % 4] for k in range(32))


def test_decoder_option(monkeypatch):
    assert data_options({"decoder": "pillow"}).decoder == "pillow"
    assert data_options(None).decoder == "auto"
    with pytest.raises(ValueError, match=r"data.decoder must be one of auto, libjpeg, pillow, got 'turbo'"):
        data_options({"decoder": "turbo"})
    monkeypatch.setattr(decode, "_jpeg", None)
    assert not decode.libjpeg_available()
    with pytest.raises(ValueError, match="data.decoder is libjpeg but pynas was built without pynas._jpeg"):
        data_options({"decoder": "libjpeg"})
    assert data_options({"decoder": "auto"}).decoder == "auto"


def test_image_size_reads_the_header():
    for size in ((500, 375), (333, 500)):
        assert jpeg.image_size(_photo(size=size)) == size
    with pytest.raises(ValueError, match="empty file"):
        jpeg.image_size(b"")
    with pytest.raises(ValueError):
        jpeg.image_size(b"\x89PNG\r\n\x1a\n" + bytes(64))
