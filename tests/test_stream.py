"""pynas.data streaming: crop geometry, reduced-size decode, StreamLoader determinism/resume/errors, registry."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from pynas.data import (
    DeviceDataset,
    DeviceLoader,
    FileDataset,
    StreamLoader,
    create_dataset,
    fraction_subset,
    make_loader,
    split,
)
from pynas.data import decode, registry
from pynas.data.stream import _apply_jitter, _sample_uniforms

Image = pytest.importorskip("PIL.Image")

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("PYNAS_DATA", REPO.parent / "shared" / "data"))
CIFAR_TRAIN = DATA_DIR / "cifar10" / "train"
needs_cifar = pytest.mark.skipif(not CIFAR_TRAIN.is_dir(),
                                 reason=f"needs the CIFAR-10 JPEG folder at {CIFAR_TRAIN} (real photographs)")
# ImageNet-like sizes: landscape, portrait, a narrow portrait, VGA.
SIZES = ((500, 375), (375, 500), (333, 500), (640, 480))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PYNAS_CACHE", str(tmp_path / "cache"))


def _cifar_photo(cls: str, index: int):
    return Image.open(CIFAR_TRAIN / cls / f"{index:04d}.jpg").convert("RGB")


def _write_photo_tree(root: Path, *, classes=("airplane", "cat", "ship"), per_class=6, first=0, suffix=".JPEG"):
    """CIFAR photographs upscaled to ImageNet-like sizes, saved as JPEG quality 90: root/<class>/<n>.JPEG."""
    for c, cls in enumerate(classes):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            size = SIZES[(c + i) % len(SIZES)]
            _cifar_photo(cls, first + i).resize(size, Image.Resampling.BICUBIC).save(
                root / cls / f"{i:03d}{suffix}", quality=90)


@pytest.fixture(scope="module")
def photo_tree(tmp_path_factory):
    if not CIFAR_TRAIN.is_dir():
        pytest.skip(f"needs the CIFAR-10 JPEG folder at {CIFAR_TRAIN} (real photographs)")
    root = tmp_path_factory.mktemp("photos")
    _write_photo_tree(root, per_class=6)
    return root


def _photo_dataset(root: Path, *, image_size=32) -> FileDataset:
    return create_dataset("imagefolder", root=root, loader="stream", image_size=image_size)


def _write_synthetic_tree(root: Path, classes, *, per_class=2, size=(12, 10)):
    rng = np.random.default_rng(0)
    for cls in classes:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.png")


# --- RandomResizedCrop geometry ------------------------------------------------------------------

def _reference_crop(width, height, u, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision's RandomResizedCrop.get_params, transcribed step by step, drawing from the same slots:
    try k uses u[2k] (area) and u[2k + 1] (log ratio); u[20], u[21] place the crop."""
    area = float(width * height)
    for k in range(10):
        target = area * (scale[0] + u[2 * k] * (scale[1] - scale[0]))
        log_ratio = math.log(ratio[0]) + u[2 * k + 1] * (math.log(ratio[1]) - math.log(ratio[0]))
        r = math.exp(log_ratio)
        w = round(math.sqrt(target * r))
        h = round(math.sqrt(target / r))
        if w > 0 and h > 0 and w <= width and h <= height:
            # torch.randint(0, height - h + 1) as a uniform integer
            i = math.floor(u[20] * (height - h + 1))
            j = math.floor(u[21] * (width - w + 1))
            return j, i, w, h
    r_in = width / height
    if r_in < ratio[0]:
        w = width
        h = round(w / ratio[0])
    elif r_in > ratio[1]:
        h = height
        w = round(h * ratio[1])
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def test_random_resized_crop_matches_reference_and_bounds():
    rng = np.random.default_rng(0)
    fallbacks = {True: 0, False: 0}  # extreme shape or not
    ratios = []
    for trial in range(3000):
        width, height = (int(v) for v in rng.integers(1, 700, 2))
        if trial % 10 == 0:  # very narrow or flat images: the fallback
            width, height = (1000, int(rng.integers(1, 20))) if trial % 20 else (int(rng.integers(1, 20)), 1000)
        u = rng.random(decode.DRAWS).tolist()
        box = decode.random_resized_crop_box(width, height, u)
        assert box == _reference_crop(width, height, u), (width, height)
        left, top, w, h = box
        assert 0 <= left and left + w <= width and 0 <= top and top + h <= height and w > 0 and h > 0
        fallback = all(_reference_crop_try(width, height, u, k) is None for k in range(10))
        fallbacks[trial % 10 == 0] += fallback
        if trial % 10 and 0.5 <= width / height <= 2 and min(width, height) >= 20:
            fallbacks["normal"] = fallbacks.get("normal", 0) + fallback
        if not fallback and min(w, h) >= 20:  # rounding to whole pixels: a little slack
            assert 0.08 * width * height * 0.9 <= w * h <= width * height
            assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1
            ratios.append(w / h)
        if fallback:
            in_ratio = width / height
            if in_ratio < 3 / 4:
                assert (w, h) == (width, round(width / (3 / 4))) and left == 0
            elif in_ratio > 4 / 3:
                assert (w, h) == (round(height * 4 / 3), height) and top == 0
            else:
                assert (w, h) == (width, height)
    assert fallbacks[True] == 300  # the narrow/flat tenth: no try can fit
    assert fallbacks.get("normal", 0) <= 5  # ordinary shapes: (1 - P(fit))^10, vanishingly rare
    assert min(ratios) < 0.8 and max(ratios) > 1.25  # the ratio range is explored both ways


def _reference_crop_try(width, height, u, k):
    target = width * height * (0.08 + u[2 * k] * 0.92)
    r = math.exp(math.log(3 / 4) + u[2 * k + 1] * (math.log(4 / 3) - math.log(3 / 4)))
    w, h = round(math.sqrt(target * r)), round(math.sqrt(target / r))
    return (w, h) if 0 < w <= width and 0 < h <= height else None


def test_random_resized_crop_fallback_cases():
    never = [1.0, 1.0] * 10 + [0.5] * (decode.DRAWS - 20)  # whole area at ratio 4/3: never fits a square
    assert decode.random_resized_crop_box(100, 100, never) == (0, 0, 100, 100)
    assert decode.random_resized_crop_box(1000, 10, never) == (493, 0, 13, 10)  # too flat: 4/3 of the height
    assert decode.random_resized_crop_box(10, 1000, never) == (0, 493, 10, 13)  # too narrow: 3/4
    # The first fitting try wins; u[20], u[21] at their extremes place it at the far corner.
    fits = [0.0, 0.5] + [1.0, 1.0] * 9 + [0.999999, 0.999999] + [0.5] * (decode.DRAWS - 22)
    left, top, w, h = decode.random_resized_crop_box(500, 375, fits)
    assert (w, h) == (round(math.sqrt(0.08 * 500 * 375)),) * 2
    assert (left + w, top + h) == (500, 375)


def test_draft_scale():
    assert decode.draft_scale(640, 480, 112) == 4
    assert decode.draft_scale(500, 375, 224) == 1  # 375 < 2 x 224: a full decode
    assert decode.draft_scale(500, 448, 224) == 2
    assert decode.draft_scale(4000, 3000, 224) == 8  # capped at libjpeg's 1/8
    assert decode.draft_scale(50, 50, 224) == 1  # upsampling


# --- decoding ----------------------------------------------------------------------------------

@needs_cifar
@pytest.mark.parametrize("box, size, drafted", [
    ((0, 0, 640, 480), 112, (160, 120)),  # 480 / 112 = 4.3: quarter scale
    ((100, 50, 500, 450), 96, (160, 120)),
    ((10, 20, 300, 310), 64, (160, 120)),
    ((0, 0, 640, 480), 60, (80, 60)),  # 480 / 60 = 8: eighth scale
    ((0, 0, 300, 300), 200, (640, 480)),  # 300 < 2 x 200: no reduction
])
def test_reduced_decode_matches_full_decode(tmp_path, box, size, drafted):
    path = tmp_path / "photo.jpg"
    _cifar_photo("cat", 3).resize((640, 480), Image.Resampling.BICUBIC).save(path, quality=90)
    with decode.open_image(str(path)) as image:
        reduced, reduced_size = decode.crop_resize(image, box, size)
    with decode.open_image(str(path)) as image:
        full, full_size = decode.crop_resize(image, box, size, reduce=False)
    assert reduced_size == drafted and full_size == (640, 480)
    assert reduced.size == full.size == (size, size) and reduced.mode == "RGB"
    diff = np.abs(np.asarray(reduced, dtype=np.int16) - np.asarray(full, dtype=np.int16))
    assert diff.mean() < 1.0 and diff.max() <= 8
    if reduced_size == full_size:
        assert diff.max() == 0


@needs_cifar
@pytest.mark.parametrize("size", SIZES[:3])
def test_eval_transform_is_resize_then_centre_crop(tmp_path, size):
    """One resize of the mapped box == torchvision's Resize(256) then CenterCrop(224), on a lossless file."""
    path = tmp_path / "photo.png"
    _cifar_photo("ship", 1).resize(size, Image.Resampling.BICUBIC).save(path)
    out = decode.decode_sample(str(path), train=False, image_size=224, resize_size=256, uniforms=None)
    width, height = size
    short, long = min(size), max(size)
    new_long = int(256 * long / short)
    new_w, new_h = (256, new_long) if width <= height else (new_long, 256)
    top, left = int(round((new_h - 224) / 2)), int(round((new_w - 224) / 2))
    two_step = Image.open(path).resize((new_w, new_h), Image.Resampling.BILINEAR)
    expected = np.asarray(two_step.crop((left, top, left + 224, top + 224)))
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(np.int16) - expected).max() <= 1
    assert decode.centre_crop_box(500, 375, image_size=224, resize_size=256) == pytest.approx(
        (58 * 500 / 341, 16.0 * 375 / 256, 282 * 500 / 341, 240.0 * 375 / 256))


@needs_cifar
def test_train_sample_is_the_drawn_crop_and_flip(tmp_path):
    path = tmp_path / "photo.png"
    _cifar_photo("airplane", 0).resize((500, 375), Image.Resampling.BICUBIC).save(path)
    for position in range(6):
        u = _sample_uniforms(3, 1, position)
        out = decode.decode_sample(str(path), train=True, image_size=48, resize_size=55, uniforms=u)
        left, top, w, h = _reference_crop(500, 375, u)
        expected = np.asarray(Image.open(path).crop((left, top, left + w, top + h)).resize(
            (48, 48), Image.Resampling.BILINEAR))
        if u[22] < 0.5:
            expected = expected[:, ::-1]
        diff = np.abs(out.astype(np.int16) - expected)
        # One resize of the box sees the pixels just outside the crop at its edge, where cropping first
        # repeats the edge; inside, the two are the same resampling.
        assert diff[2:-2, 2:-2].max() <= 1 and diff.mean() < 0.5


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "LA", "I;16"])
def test_other_modes_become_rgb(tmp_path, mode):
    base = Image.new("RGB", (40, 30), (200, 100, 50))
    if mode == "P":
        image = base.convert("P", palette=Image.Palette.ADAPTIVE)
    elif mode == "I;16":
        image = Image.new("I;16", (40, 30), 120)
    else:
        image = base.convert(mode)
    path = tmp_path / ("x.jpg" if mode in ("L", "CMYK") else "x.png")
    image.save(path, **({"quality": 95} if path.suffix == ".jpg" else {}))
    out = decode.decode_sample(str(path), train=False, image_size=16, resize_size=18, uniforms=None)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    if mode in ("L", "LA", "I;16"):
        assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    if mode in ("P", "RGBA"):
        assert np.abs(out.astype(int) - (200, 100, 50)).max() <= 8


def test_unreadable_files_raise_decode_error(tmp_path):
    (tmp_path / "garbage.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(decode.DecodeError):
        decode.decode_sample(str(tmp_path / "garbage.jpg"), train=False, image_size=8, resize_size=9, uniforms=None)
    with pytest.raises(decode.DecodeError, match="No such file"):
        decode.decode_sample(str(tmp_path / "missing.jpg"), train=False, image_size=8, resize_size=9,
                             uniforms=None)


# --- colour jitter -----------------------------------------------------------------------------

def _reference_jitter(image: torch.Tensor, u, strength):
    """torchvision's ColorJitter on one float image [3, H, W]: the three adjustments in the drawn order."""
    lo, hi = max(0.0, 1 - strength), 1 + strength
    factors = {"brightness": lo + (hi - lo) * u[26], "contrast": lo + (hi - lo) * u[27],
               "saturation": lo + (hi - lo) * u[28]}
    order = sorted(range(3), key=lambda k: (u[23 + k], k))
    x = image.clone()
    for op in order:
        name = ("brightness", "contrast", "saturation")[op]
        f = factors[name]
        gray = (0.2989 * x[0] + 0.587 * x[1] + 0.114 * x[2]).unsqueeze(0)
        if name == "brightness":
            other = torch.zeros_like(x)
        elif name == "contrast":
            other = gray.mean().expand_as(x)
        else:
            other = gray.expand_as(x)
        x = (f * x + (1 - f) * other).clamp(0, 1)
    return x


def test_colour_jitter_matches_reference():
    images = torch.rand(6, 3, 9, 7, generator=torch.Generator().manual_seed(0))
    draws = [_sample_uniforms(1, 0, p) for p in range(6)]
    coefficients = torch.stack([torch.from_numpy(decode.jitter_coefficients(u, 0.4)) for u in draws])
    out = _apply_jitter(images.clone(), coefficients)
    for k, u in enumerate(draws):
        torch.testing.assert_close(out[k], _reference_jitter(images[k], u, 0.4), atol=1e-5, rtol=1e-5)
    factors = coefficients[:, :, 0]
    assert factors.min() >= 0.6 and factors.max() <= 1.4
    assert not torch.allclose(out, images)


# --- FileDataset ---------------------------------------------------------------------------------

def _file_dataset(n=10, classes=("a", "b"), **kw) -> FileDataset:
    labels = torch.arange(n) % len(classes)
    return FileDataset(paths=tuple(f"/nowhere/{i}.jpg" for i in range(n)), labels=labels, classes=classes,
                       mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), **kw)


def test_file_dataset_interface():
    ds = _file_dataset(10, name="set")
    assert len(ds) == 10 and ds.num_classes == 2 and ds.image_shape == (3, 224, 224) and ds.resize_size == 256
    assert isinstance(ds.paths, np.ndarray) and ds.paths.dtype.kind == "U"
    assert _file_dataset(image_size=160).resize_size == 183
    part = ds.subset([3, 1], name="part")
    assert part.paths.tolist() == ["/nowhere/3.jpg", "/nowhere/1.jpg"] and part.labels.tolist() == [1, 1]
    assert part.name == "part" and part.mean == ds.mean and part.image_size == ds.image_size


@pytest.mark.parametrize("change, message", [
    (dict(labels=torch.zeros(9, dtype=torch.int64)), r"labels must be an int64 tensor \[10\]"),
    (dict(labels=torch.zeros(10, dtype=torch.int32)), r"labels must be an int64 tensor"),
    (dict(labels=torch.full((10,), 2)), r"labels must lie in 0..1"),
    (dict(mean=(0.5,)), "expected 3 means and 3 positive stds"),
    (dict(std=(0.2, 0.0, 0.2)), "expected 3 means and 3 positive stds"),
    (dict(image_size=0), "image_size must be an int >= 1"),
    (dict(image_size=224, resize_size=200), r"resize_size must be an int >= image_size \(224\)"),
    (dict(paths=[1, 2]), "paths must be strings"),
    (dict(paths=np.zeros(10)), "paths must be a 1-d numpy array of str"),
    (dict(classes=()), "no classes"),
])
def test_file_dataset_rejects_bad_fields(change, message):
    fields = dict(paths=tuple(f"{i}.jpg" for i in range(10)), labels=torch.arange(10) % 2, classes=("a", "b"),
                  mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2))
    fields.update(change)
    with pytest.raises(ValueError, match=message):
        FileDataset(**fields)


def test_split_valid_per_class_and_fraction_subset_counts():
    labels = torch.tensor([0] * 40 + [1] * 25 + [2] * 3)[torch.randperm(68, generator=torch.Generator().manual_seed(0))]
    ds = FileDataset(paths=tuple(f"{i}.jpg" for i in range(68)), labels=labels, classes=("a", "b", "c"),
                     mean=(0.5,) * 3, std=(0.2,) * 3, name="set")
    train, valid = split(ds, valid_per_class=2, seed=0)
    assert isinstance(train, FileDataset) and isinstance(valid, FileDataset)
    assert torch.bincount(valid.labels).tolist() == [2, 2, 2] and torch.bincount(train.labels).tolist() == [38, 23, 1]
    assert not set(train.paths.tolist()) & set(valid.paths.tolist())
    assert split(ds, valid_per_class=2, seed=0)[1].paths.tolist() == valid.paths.tolist()
    assert split(ds, valid_per_class=2, seed=1)[1].paths.tolist() != valid.paths.tolist()
    with pytest.raises(ValueError, match=r"valid_per_class=3 but class 'c' has 3 images"):
        split(ds, valid_per_class=3)
    with pytest.raises(ValueError, match="valid_per_class must be an int >= 1"):
        split(ds, valid_per_class=0)
    with pytest.raises(ValueError, match="exactly one of valid_fraction, valid_per_class"):
        split(ds, valid_fraction=0.1, valid_per_class=2)

    tenth = fraction_subset(ds, 0.1, seed=0)
    assert torch.bincount(tenth.labels).tolist() == [4, 3, 1]  # 4, 2.5 rounded up, 0.3 but at least 1
    quarter = fraction_subset(ds, 0.25, seed=0)
    assert torch.bincount(quarter.labels).tolist() == [10, 6, 1]
    assert set(tenth.paths.tolist()) <= set(quarter.paths.tolist())  # nested with one seed
    after = fraction_subset(ds, 0.2, seed=0, offset=0.1)
    assert torch.bincount(after.labels).tolist() == [8, 5, 1]
    assert not set(after.paths.tolist()) & set(tenth.paths.tolist())  # offset: disjoint
    assert fraction_subset(ds, 0.1, seed=1).paths.tolist() != tenth.paths.tolist()
    assert fraction_subset(ds, 1.0, seed=0).paths.tolist() == ds.paths.tolist()
    for bad in (0, 1.5, True, "0.1"):
        with pytest.raises(ValueError, match=r"fraction must be a number in \(0, 1\]"):
            fraction_subset(ds, bad, seed=0)
    with pytest.raises(ValueError, match=r"class 'b' has 25 images; offset 0.9 skips 23 and fraction 0.1 takes 3"):
        fraction_subset(ds, 0.1, seed=0, offset=0.9)
    with pytest.raises(ValueError, match="dataset must be a DeviceDataset or a FileDataset"):
        fraction_subset(list(range(5)), 0.1, seed=0)
    # A DeviceDataset too.
    dev = DeviceDataset(images=torch.zeros(68, 3, 2, 2, dtype=torch.uint8), labels=labels, classes=("a", "b", "c"),
                        mean=(0.5,) * 3, std=(0.2,) * 3)
    assert torch.bincount(fraction_subset(dev, 0.1, seed=0).labels).tolist() == [4, 3, 1]
    assert torch.bincount(split(dev, valid_per_class=1)[1].labels).tolist() == [1, 1, 1]


# --- StreamLoader ------------------------------------------------------------------------------

def _collect(loader, steps=None):
    out = []
    for k, (x, y) in enumerate(loader):
        out.append((x.clone(), y.clone()))
        if steps is not None and k + 1 == steps:
            break
    return out


def _assert_same_batches(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(ya, yb)
        assert torch.equal(xa, xb)


def test_stream_batches_shape_and_normalization(photo_tree):
    ds = _photo_dataset(photo_tree)
    assert ds.num_classes == 3 and len(ds) == 18
    loader = StreamLoader(ds, batch_size=8, workers=0, rank=0, world_size=1)
    batches = _collect(loader)
    assert [len(y) for _, y in batches] == [8, 8, 2] and len(loader) == 3
    x, y = batches[0]
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and x.is_contiguous() and y.dtype == torch.int64
    labels = torch.cat([y for _, y in batches])
    assert torch.equal(torch.sort(labels).values, torch.sort(ds.labels).values)  # each sample once
    pixels = torch.cat([x for x, _ in batches])
    assert pixels.mean().abs() < 0.5 and 0.5 < pixels.std() < 1.5  # normalized by the estimated stats
    evaluation = StreamLoader(ds, batch_size=8, shuffle=False, train=False, workers=0, rank=0, world_size=1,
                              memory_format="channels_last", dtype=torch.bfloat16)
    x, y = next(iter(evaluation))
    assert x.dtype == torch.bfloat16 and x.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y, ds.labels[:8])
    # Evaluation is deterministic and has no draws: two epochs agree.
    evaluation.set_epoch(0)
    first = _collect(evaluation)
    assert evaluation.epoch == 1
    _assert_same_batches(first, _collect(evaluation))


def test_stream_same_batches_for_any_worker_count(photo_tree):
    ds = _photo_dataset(photo_tree)
    kw = dict(batch_size=5, colour_jitter=0.4, seed=3, rank=0, world_size=1)
    inline = _collect(StreamLoader(ds, workers=0, **kw))
    with StreamLoader(ds, workers=2, prefetch=1, **kw) as loader:
        pooled = _collect(loader)
    _assert_same_batches(inline, pooled)
    other_seed = _collect(StreamLoader(ds, workers=0, **{**kw, "seed": 4}))
    assert not torch.equal(other_seed[0][0], inline[0][0])


def test_stream_ranks_concatenate_to_one_process(photo_tree):
    ds = _photo_dataset(photo_tree)
    kw = dict(colour_jitter=0.4, seed=1, workers=0)
    whole = _collect(StreamLoader(ds, batch_size=8, rank=0, world_size=1, **kw))
    parts = [_collect(StreamLoader(ds, batch_size=4, rank=r, world_size=2, **kw)) for r in range(2)]
    assert len(parts[0]) == len(parts[1]) == len(whole) == 3
    for (x, y), (x0, y0), (x1, y1) in zip(whole, *parts):
        assert torch.equal(torch.cat([y0, y1]), y) and torch.equal(torch.cat([x0, x1]), x)
    assert [len(y) for _, y in parts[0]] == [4, 4, 1]  # the last global batch of 2 is split evenly


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_resume_mid_epoch_is_exact(photo_tree, workers):
    ds = _photo_dataset(photo_tree)
    kw = dict(batch_size=4, colour_jitter=0.4, seed=5, rank=0, world_size=1, drop_last=True)
    reference = StreamLoader(ds, workers=0, **kw)
    expected = _collect(reference) + _collect(reference)  # two epochs
    first = StreamLoader(ds, workers=0, **kw)
    seen = _collect(first, steps=3)
    state = first.state_dict()
    assert state["position"] == 12 and state["epoch"] == 0
    resumed = StreamLoader(ds, workers=workers, prefetch=1, **kw)
    resumed.load_state_dict(state)
    rest = _collect(resumed) + _collect(resumed, steps=3)
    resumed.close()
    _assert_same_batches(seen + rest, expected[:len(seen) + len(rest)])
    assert resumed.epoch == 1 and resumed.position == 12


def test_stream_stale_iterator_set_epoch_and_state_checks(photo_tree):
    ds = _photo_dataset(photo_tree)
    loader = StreamLoader(ds, batch_size=4, workers=0, rank=0, world_size=1)
    old = iter(loader)
    next(old)
    fresh = iter(loader)
    next(fresh)
    with pytest.raises(RuntimeError, match="superseded"):
        next(old)
    assert loader.position == 8
    loader.set_epoch(3)
    assert (loader.epoch, loader.position) == (3, 0)
    state = loader.state_dict()
    other = StreamLoader(ds, batch_size=5, workers=0, rank=0, world_size=1)
    with pytest.raises(ValueError, match="state has batch_size=4, this loader 5"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match=r"missing keys \['seed'\]"):
        loader.load_state_dict({k: v for k, v in state.items() if k != "seed"})
    with pytest.raises(ValueError, match="position 99 outside 0..18"):
        loader.load_state_dict({**state, "position": 99})
    evaluation = StreamLoader(ds, batch_size=4, train=False, workers=0, rank=0, world_size=1)
    with pytest.raises(ValueError, match="state has train=True, this loader False"):
        evaluation.load_state_dict(state)


@needs_cifar
def test_stream_skips_corrupt_images_or_raises_when_strict(tmp_path):
    _write_photo_tree(tmp_path, per_class=3)
    (tmp_path / "cat" / "broken.JPEG").write_bytes(b"\xff\xd8 definitely not a jpeg")
    whole = (tmp_path / "ship" / "000.JPEG").read_bytes()
    (tmp_path / "ship" / "truncated.JPEG").write_bytes(whole[:len(whole) // 2])
    ds = _photo_dataset(tmp_path)
    assert len(ds) == 11
    loader = StreamLoader(ds, batch_size=11, shuffle=False, workers=0, rank=0, world_size=1)
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable image\(s\).*broken.JPEG.*truncated.JPEG"):
        (x, y), = _collect(loader)
    assert len(y) == 9 and x.shape[0] == 9
    assert [Path(p).name for p, _ in loader.skipped] == ["broken.JPEG", "truncated.JPEG"]
    assert "truncated" in loader.skipped[1][1]  # Pillow's reason
    keep = torch.tensor([i for i, p in enumerate(ds.paths) if "broken" not in p and "truncated" not in p])
    assert torch.equal(y, ds.labels[keep])
    with StreamLoader(ds, batch_size=4, shuffle=False, workers=2, strict=True, rank=0, world_size=1) as strict:
        with pytest.raises(ValueError, match=r"broken.JPEG: cannot decode image \(cannot identify image file"):
            _collect(strict)


def test_stream_workers_shut_down(photo_tree):
    ds = _photo_dataset(photo_tree)
    with StreamLoader(ds, batch_size=4, workers=2, rank=0, world_size=1) as loader:
        next(iter(loader))
        processes = list(loader._loader._iterator._workers)
        assert len(processes) == 2 and all(p.is_alive() for p in processes)
    assert all(not p.is_alive() for p in processes)
    assert len(_collect(loader, steps=1)) == 1  # iterating after close starts workers again
    loader.close()
    # A script that leaves mid-epoch without close() exits promptly.
    script = textwrap.dedent(f"""
        from pynas.data import create_dataset, StreamLoader
        ds = create_dataset("imagefolder", root={str(photo_tree)!r}, loader="stream", image_size=32)
        loader = StreamLoader(ds, batch_size=2, workers=2, rank=0, world_size=1)
        it = iter(loader)
        next(it)
        print("ok")
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_stream_on_cuda_matches_cpu(photo_tree):
    """Pinned uint8 upload, then jitter and normalization on the GPU: the same batches as on the CPU."""
    ds = _photo_dataset(photo_tree)
    kw = dict(batch_size=6, colour_jitter=0.4, seed=2, rank=0, world_size=1, workers=2,
              memory_format="channels_last")
    with StreamLoader(ds, **kw) as cpu_loader, StreamLoader(ds, device="cuda", **kw) as gpu_loader:
        cpu, gpu = _collect(cpu_loader), _collect(gpu_loader)
    assert len(cpu) == len(gpu) == 3
    for (xc, yc), (xg, yg) in zip(cpu, gpu):
        assert xg.device.type == "cuda" and yg.device.type == "cuda"
        assert xg.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(yc, yg.cpu())
        torch.testing.assert_close(xc, xg.cpu(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kw, message", [
    (dict(batch_size=0), "batch_size must be an int >= 1"),
    (dict(batch_size=4, shuffle=1), "shuffle must be a bool"),
    (dict(batch_size=4, train=False, colour_jitter=0.4), "colour_jitter is a training augmentation"),
    (dict(batch_size=4, colour_jitter=-0.1), "colour_jitter must be None or a number >= 0"),
    (dict(batch_size=4, colour_jitter=True), "colour_jitter must be None or a number >= 0"),
    (dict(batch_size=4, workers=-1), "workers must be None or an int >= 0"),
    (dict(batch_size=4, prefetch=0), "prefetch must be an int >= 1"),
    (dict(batch_size=4, memory_format="nhwc"), "memory_format must be one of"),
    (dict(batch_size=4, dtype=torch.int32), "dtype must be a floating torch.dtype"),
    (dict(batch_size=4, device="nonsense"), "bad device 'nonsense'"),
    (dict(batch_size=4, rank=2, world_size=2), r"StreamLoader: rank must be an int in 0..1"),
    (dict(batch_size=4, rank=0), "give both rank and world_size"),
    (dict(batch_size=20, drop_last=True), "drop_last with batch_size 20 > 10 samples"),
    (dict(batch_size=3, rank=0, world_size=3), "last global batch of an epoch has 1 samples for 3 ranks"),
    (dict(batch_size=4, seed=-1), "seed must be an int >= 0"),
])
def test_stream_loader_rejects_bad_arguments(kw, message):
    with pytest.raises(ValueError, match=message):
        StreamLoader(_file_dataset(10), **kw)
    with pytest.raises(ValueError, match="dataset must be a FileDataset"):
        StreamLoader([1, 2], batch_size=1)
    with pytest.raises(TypeError):
        StreamLoader(_file_dataset(10), 4)  # keyword-only


def test_make_loader_picks_the_loader():
    files = _file_dataset(10)
    stream = make_loader(files, batch_size=2, augment=True, colour_jitter=0.4, workers=0, rank=0, world_size=1)
    assert isinstance(stream, StreamLoader) and stream.train and stream.colour_jitter == 0.4 and stream.workers == 0
    assert not make_loader(files, batch_size=2, workers=0, rank=0, world_size=1).train
    device = DeviceDataset(images=torch.zeros(10, 3, 4, 4, dtype=torch.uint8), labels=torch.arange(10) % 2,
                           classes=("a", "b"), mean=(0.5,) * 3, std=(0.2,) * 3)
    loader = make_loader(device, batch_size=2, augment=True, workers=4, rank=0, world_size=1)
    assert isinstance(loader, DeviceLoader) and loader.dataset is device
    with pytest.raises(ValueError, match="colour_jitter is only for streamed datasets"):
        make_loader(device, batch_size=2, colour_jitter=0.4)
    with pytest.raises(ValueError, match="augment must be a bool for a FileDataset"):
        make_loader(files, batch_size=2, augment=device.augmentation)
    with pytest.raises(ValueError, match="must be a DeviceDataset or a FileDataset"):
        make_loader([1], batch_size=2)


# --- registry ------------------------------------------------------------------------------------

@needs_cifar
def test_create_imagenet_on_a_tiny_tree(tmp_path):
    wnids = ("n01440764", "n01443537", "n01484850")
    for split_name, first in (("train", 0), ("val", 10)):
        for wnid, cls in zip(wnids, ("airplane", "cat", "ship")):
            _write_photo_tree(tmp_path / split_name, classes=(cls,), per_class=3 if split_name == "train" else 2,
                              first=first)
            (tmp_path / split_name / cls).rename(tmp_path / split_name / wnid)
    train = create_dataset("imagenet", root=tmp_path, split="train")
    assert isinstance(train, FileDataset) and train.name == "imagenet/train" and train.classes == wnids
    assert train.mean == registry.IMAGENET_MEAN and train.std == registry.IMAGENET_STD
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and train.image_shape == (3, 224, 224)
    assert [Path(p).relative_to(tmp_path).as_posix() for p in train.paths[:2]] == [
        "train/n01440764/000.JPEG", "train/n01440764/001.JPEG"]
    val = create_dataset("imagenet", root=tmp_path, split="val", image_size=64)
    assert val.name == "imagenet/val" and len(val) == 6 and val.resize_size == 73
    assert create_dataset("imagenet", root=tmp_path, split="test").paths.tolist() == \
        create_dataset("imagenet", root=tmp_path, split="val").paths.tolist()
    assert len(create_dataset("imagenet", root=tmp_path, subset=3, seed=0)) == 3
    x, y = next(iter(make_loader(val, batch_size=6, shuffle=False, workers=0, rank=0, world_size=1)))
    assert x.shape == (6, 3, 64, 64) and y.tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="ImageNet's images differ in size"):
        create_dataset("imagenet", root=tmp_path, loader="device")
    (tmp_path / "val" / "n01484850").rename(tmp_path / "val" / "n09999999")
    with pytest.raises(ValueError, match=r"missing 1 of train's: n01484850; 1 not in train: n09999999"):
        create_dataset("imagenet", root=tmp_path, split="val")
    with pytest.raises(FileNotFoundError, match=r"ImageNet train folder not found"):
        create_dataset("imagenet", root=tmp_path / "nope")


def test_imagefolder_class_mismatch_and_one_class(tmp_path):
    _write_synthetic_tree(tmp_path / "train", ("a", "b", "c"))
    _write_synthetic_tree(tmp_path / "test", ("a", "b", "d"))
    for loader in ("auto", "device", "stream"):
        with pytest.raises(ValueError, match=r"differ from those of .*train \(missing 1 of train's: c; "
                                             r"1 not in train: d\)"):
            create_dataset("imagefolder", root=tmp_path, split="test", loader=loader)
    _write_synthetic_tree(tmp_path / "one", ("only",))
    with pytest.raises(ValueError, match=r"has 1 class folder \(only\); classification needs at least 2"):
        create_dataset("imagefolder", root=tmp_path / "one")


def test_imagefolder_loader_choice(tmp_path, monkeypatch):
    _write_synthetic_tree(tmp_path / "same", ("a", "b"), per_class=3, size=(12, 10))
    same = create_dataset("imagefolder", root=tmp_path / "same")
    assert isinstance(same, DeviceDataset) and same.images.shape == (6, 3, 10, 12)
    streamed = create_dataset("imagefolder", root=tmp_path / "same", loader="stream", image_size=8)
    assert isinstance(streamed, FileDataset) and streamed.image_shape == (3, 8, 8)
    # Estimated stats of the stream agree with the exact ones of the decoded set.
    np.testing.assert_allclose(streamed.mean, same.mean, atol=1e-6)
    np.testing.assert_allclose(streamed.std, same.std, atol=1e-6)
    monkeypatch.setattr(registry, "DEVICE_BUDGET_BYTES", 6 * 3 * 12 * 10 - 1)  # one byte too small
    assert isinstance(create_dataset("imagefolder", root=tmp_path / "same", cache=False), FileDataset)
    monkeypatch.undo()
    monkeypatch.setenv("PYNAS_CACHE", str(tmp_path / "cache"))

    _write_synthetic_tree(tmp_path / "mixed", ("a", "b"), per_class=2, size=(12, 10))
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "mixed" / "b" / "big.png")
    assert isinstance(create_dataset("imagefolder", root=tmp_path / "mixed"), FileDataset)
    with pytest.raises(ValueError, match=r"loader='device'\): .*mixed holds images of different sizes "
                                         r"\(.*0.png is 12x10, .*big.png is 30x20\).*use loader='stream'"):
        create_dataset("imagefolder", root=tmp_path / "mixed", loader="device")
    with pytest.raises(ValueError, match="image_size/resize_size apply to streamed datasets"):
        create_dataset("imagefolder", root=tmp_path / "same", loader="device", image_size=8)


def test_create_dataset_stream_argument_errors(tmp_path):
    with pytest.raises(ValueError, match=r"loader must be one of 'auto', 'device', 'stream', got 'gpu'"):
        create_dataset("imagefolder", root=tmp_path, loader="gpu")
    with pytest.raises(ValueError, match=r"loader='stream' is for folders of image files"):
        create_dataset("cifar10", root=tmp_path, loader="stream")
    with pytest.raises(ValueError, match="image_size/resize_size apply to streamed datasets"):
        create_dataset("cifar10", root=tmp_path, image_size=64)
    with pytest.raises(ValueError, match="image_size must be None or an int >= 1"):
        create_dataset("imagenet", root=tmp_path, image_size=0)
    with pytest.raises(ValueError, match=r"split must be one of 'train', 'val', 'test', got 'valid'"):
        create_dataset("imagenet", root=tmp_path, split="valid")
    _write_synthetic_tree(tmp_path / "train", ("a", "b"))
    with pytest.raises(ValueError, match=r"resize_size must be an int >= image_size \(64\)"):
        create_dataset("imagefolder", root=tmp_path, loader="stream", image_size=64, resize_size=32)
