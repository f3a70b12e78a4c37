"""The ImageNet-like generator (pynas.data.synthetic), the packer and its reader (pynas.data.pack), the
'packed' dataset and the ``pynas data`` commands."""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import DATA_DIR
from pynas.cli import main as cli_main
from pynas.data import DeviceLoader, create_dataset
from pynas.data.pack import IMAGES_FILE, LABELS_FILE, META_FILE, centre_crop_box, load_packed, pack
from pynas.data.synthetic import SIZE_ATOMS, generate_imagenet_like, sample_size, size_model_mean, wnid

Image = pytest.importorskip("PIL.Image")

CIFAR = DATA_DIR / "cifar10"
needs_cifar = pytest.mark.skipif(not (CIFAR / "train").is_dir() or not (CIFAR / "test").is_dir(),
                                 reason=f"CIFAR-10 JPEG folders not found at {CIFAR}/train and /test "
                                        "(the generator's source photographs; set PYNAS_DATA)")


# ------------------------------------------------------------------ helpers
def _direct(path, size: int) -> np.ndarray:
    """Resize(size) + CenterCrop(size) the plain way: the whole (drafted) image resized so its shorter side
    is ``size``, then the centre sliced out of the array."""
    with Image.open(path) as im:
        w, h = im.size
        short, long = min(w, h), max(w, h)
        new_long = int(size * long / short)
        nw, nh = (size, new_long) if w <= h else (new_long, size)
        extent = (0, 0, w, h)
        if im.format == "JPEG":
            extent = im.draft(im.mode, (nw, nh))[1]  # the original's extent in drafted pixels
        im = im.convert("RGB")
        filt = Image.Resampling.BOX if extent[2] >= nw else Image.Resampling.BICUBIC
        full = np.asarray(im.resize((nw, nh), filt, box=extent))
    top, left = int(round((nh - size) / 2)), int(round((nw - size) / 2))
    return full[top:top + size, left:left + size]


def _write_image(path: Path, width: int, height: int, seed: int, fmt: str = "JPEG") -> None:
    rng = np.random.default_rng(seed)
    # Smooth content with some detail, so a wrong crop or scale shows.
    small = rng.integers(0, 256, size=(max(2, height // 24), max(2, width // 24), 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, fmt, **({"quality": 92} if fmt == "JPEG" else {}))


@pytest.fixture
def handmade(tmp_path) -> Path:
    """A folder of odd sizes: wide, tall, smaller than the packed size, PNG, two classes, train and val."""
    root = tmp_path / "src"
    sizes = [(500, 375), (333, 500), (1200, 300), (12, 20), (64, 64), (97, 211)]
    for i, (w, h) in enumerate(sizes):
        cls = "alpha" if i % 2 == 0 else "beta"
        _write_image(root / "train" / cls / f"img{i}.JPEG", w, h, i)
    _write_image(root / "train" / "beta" / "img9.png", 150, 90, 9, fmt="PNG")
    _write_image(root / "val" / "alpha" / "v0.jpg", 400, 300, 10)
    _write_image(root / "val" / "beta" / "v1.jpg", 300, 400, 11)
    return root


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    if not (CIFAR / "train").is_dir() or not (CIFAR / "test").is_dir():
        pytest.skip(f"CIFAR-10 JPEG folders not found at {CIFAR}/train and /test (set PYNAS_DATA)")
    out = tmp_path_factory.mktemp("gen") / "imagenet-like"
    generate_imagenet_like(out, classes=3, train_per_class=5, val_per_class=2, seed=7, source=CIFAR, grayscale=1,
                           cmyk=1, corrupt=3)
    return out


def _run_cli(argv, capsys) -> tuple[int, str, str]:
    try:
        rc = cli_main(argv)
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


# ------------------------------------------------------------------ generator
def test_size_model_matches_imagenet_facts():
    rng = np.random.default_rng(0)
    sizes = [sample_size(rng) for _ in range(20_000)]
    counts = Counter(sizes)
    assert counts.most_common(1)[0][0] == (500, 375)  # the commonest ImageNet size
    top4 = {s for s, _ in counts.most_common(4)}
    assert top4 == {(500, 375), (500, 333), (375, 500), (333, 500)}
    long = np.array([max(s) for s in sizes])
    assert 0.6 < (long == 500).mean() < 0.8  # most files are 500 px on the long side
    assert (long < 100).any() and (long > 1000).any()  # a minority from under 100 to over 1000 px
    assert long.min() >= 80 and long.max() <= 2600
    portrait = np.mean([w < h for w, h in sizes])
    assert 0.15 < portrait < 0.4
    mean_w, mean_h = size_model_mean(samples=20_000)
    assert 380 < mean_w < 460 and 320 < mean_h < 390, (mean_w, mean_h)  # about 400x350
    assert abs(sum(p for *_, p in SIZE_ATOMS) - 0.69) < 1e-9


@needs_cifar
def test_generator_is_deterministic_and_seeded(tmp_path):
    kwargs = dict(classes=2, train_per_class=3, val_per_class=1, source=CIFAR, corrupt=2)
    a = generate_imagenet_like(tmp_path / "a", seed=3, **kwargs)
    generate_imagenet_like(tmp_path / "b", seed=3, **kwargs)
    generate_imagenet_like(tmp_path / "c", seed=4, **kwargs)

    def files(root):
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.JPEG"))}

    fa, fb, fc = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    assert len(fa) == 2 * 3 + 2 * 1 + 2
    assert fa == fb
    assert fa.keys() == fc.keys() and fa != fc
    assert a["classes"] == ["n00000000", "n00000001"]
    assert sorted(os.listdir(tmp_path / "a" / "val" / "n00000001")) == ["ILSVRC2012_val_00000002.JPEG"]


@needs_cifar
def test_generated_files_look_like_imagenet(generated):
    from PIL import JpegImagePlugin

    manifest = json.loads((generated / "synthetic.json").read_text())
    assert manifest["config"]["seed"] == 7 and manifest["splits"]["train"]["images"] == 15
    modes = Counter()
    for path in sorted(generated.rglob("*.JPEG")):
        if "corrupt" in path.name:
            continue
        with Image.open(path) as im:
            modes[im.mode] += 1
            im.load()
            assert im.format == "JPEG" and 80 <= max(im.size) <= 2600
            if im.mode == "RGB":
                assert JpegImagePlugin.get_sampling(im) == 2  # 4:2:0
    assert modes == {"RGB": 21 - 4, "L": 2, "CMYK": 2}  # one of each odd mode per split
    assert sorted(os.listdir(generated / "train")) == [wnid(k) for k in range(3)]
    # 0.3-1 bytes per pixel: grain makes the blown-up photographs about as costly to decode as real files.
    assert 0.3 < manifest["splits"]["train"]["bytes_per_pixel"] < 1.0


@needs_cifar
def test_classes_beyond_the_source_cycle_with_other_photographs(tmp_path):
    generate_imagenet_like(tmp_path / "g", classes=11, train_per_class=1, val_per_class=0, source=CIFAR, grain=0)
    first = tmp_path / "g" / "train" / "n00000000" / "n00000000_0.JPEG"
    cycled = tmp_path / "g" / "train" / "n00000010" / "n00000010_0.JPEG"
    assert first.read_bytes() != cycled.read_bytes()


def test_generator_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="classes"):
        generate_imagenet_like(tmp_path / "x", classes=0, source=tmp_path)
    with pytest.raises(FileNotFoundError, match="source folder"):
        generate_imagenet_like(tmp_path / "x", source=tmp_path / "missing")


# ------------------------------------------------------------------ packing
def test_centre_crop_box_follows_torchvision():
    # Resize(64): 500x375 -> 85x64 (int(64 * 500 / 375) = 85); CenterCrop(64): left round(21 / 2) = 10.
    assert centre_crop_box(500, 375, 64) == (85, 64, 10, 0)
    assert centre_crop_box(333, 500, 64) == (64, 96, 0, 16)
    assert centre_crop_box(1200, 300, 16) == (64, 16, 24, 0)


@pytest.mark.parametrize("size", [16, 64])
def test_pack_round_trip(handmade, tmp_path, size):
    out = tmp_path / "packed"
    metas = pack(handmade, size=size, out=out, workers=1)
    assert set(metas) == {"train", "val"}
    images, labels, meta = load_packed(out, "train")
    paths = sorted((handmade / "train" / "alpha").iterdir()) + sorted((handmade / "train" / "beta").iterdir())
    assert meta["classes"] == ["alpha", "beta"] and meta["count"] == len(paths) == 7 and meta["size"] == size
    assert labels.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert images.shape == (7, 3, size, size) and images.dtype == torch.uint8
    for i, path in enumerate(paths):
        got = images[i].permute(1, 2, 0).numpy().astype(int)
        want = _direct(path, size).astype(int)
        assert np.abs(got - want).max() <= 1, path.name
        # Against a full decode (no draft): the reduced decode changes detail, not the picture.
        with Image.open(path) as im:
            w, h = im.size
            nw, nh, left, top = centre_crop_box(w, h, size)
            full = np.asarray(im.convert("RGB").resize((nw, nh), Image.Resampling.LANCZOS)).astype(int)
        assert np.abs(got - full[top:top + size, left:left + size]).mean() < 15, path.name  # shifted by 2: > 30
    # Train stats, in [0, 1] units, recorded for every split.
    pixels = images.permute(0, 2, 3, 1).reshape(-1, 3).double() / 255
    assert meta["mean"] == pytest.approx(pixels.mean(0).tolist(), abs=1e-9)
    assert meta["std"] == pytest.approx(pixels.std(0, unbiased=False).tolist(), abs=1e-9)
    val = load_packed(out, "val")
    assert val.meta["mean"] == meta["mean"] and val.meta["stats_from"] == "train"
    assert val.labels.tolist() == [0, 1] and val.meta["skipped"] == []


def test_pack_with_workers_equals_inline(handmade, tmp_path):
    pack(handmade, size=24, out=tmp_path / "one", workers=1)
    pack(handmade, size=24, out=tmp_path / "two", workers=2)
    for split in ("train", "val"):
        for name in (IMAGES_FILE, LABELS_FILE):
            assert (tmp_path / "one" / split / name).read_bytes() == (tmp_path / "two" / split / name).read_bytes()


def test_load_packed_is_a_zero_copy_view(handmade, tmp_path):
    pack(handmade, size=16, out=tmp_path / "p", splits="train")
    images = load_packed(tmp_path / "p", "train").images
    assert images.stride() == (16 * 16 * 3, 1, 16 * 3, 3)  # NCHW view of the NHWC file
    raw = np.fromfile(tmp_path / "p" / "train" / IMAGES_FILE, dtype=np.uint8).reshape(-1, 16, 16, 3)
    assert torch.equal(images.permute(0, 2, 3, 1), torch.from_numpy(raw))
    # The file is mapped, not read: the tensor's memory is the mapping of the whole file.
    assert images.untyped_storage().nbytes() == raw.nbytes
    assert not (tmp_path / "p" / "val").exists()


def test_load_packed_validates_against_meta(handmade, tmp_path):
    out = tmp_path / "p"
    pack(handmade, size=16, out=out, splits="train")
    folder = out / "train"
    images = (folder / IMAGES_FILE).read_bytes()
    (folder / IMAGES_FILE).write_bytes(images[:-5])
    with pytest.raises(ValueError, match=r"images\.u8: expected .* bytes"):
        load_packed(out, "train")
    (folder / IMAGES_FILE).write_bytes(images)
    labels = np.load(folder / LABELS_FILE)
    np.save(folder / LABELS_FILE, labels.astype(np.int32))
    with pytest.raises(ValueError, match=r"labels\.npy: expected int64"):
        load_packed(out, "train")
    np.save(folder / LABELS_FILE, labels)
    meta = json.loads((folder / META_FILE).read_text())
    (folder / META_FILE).write_text(json.dumps({**meta, "count": meta["count"] - 1}))
    with pytest.raises(ValueError, match=r"images\.u8"):
        load_packed(out, "train")
    (folder / META_FILE).write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(ValueError, match=r"meta\.json: format version"):
        load_packed(out, "train")
    with pytest.raises(FileNotFoundError, match="meta.json"):
        load_packed(out, "val")


def test_class_lists_must_match_across_splits(handmade, tmp_path):
    _write_image(handmade / "val" / "gamma" / "g.jpg", 50, 50, 1)
    with pytest.raises(ValueError, match="val has gamma that train lacks"):
        pack(handmade, size=16, out=tmp_path / "p")
    assert not (tmp_path / "p").exists()  # checked before anything is written


@needs_cifar
def test_corrupt_files_are_skipped_and_recorded(generated, tmp_path):
    metas = pack(generated, size=32, out=tmp_path / "p", workers=2)
    train = metas["train"]
    skipped = {Path(s["path"]).name: s["reason"] for s in train["skipped"]}
    assert sorted(skipped) == [f"{wnid(j)}_corrupt{j}.JPEG" for j in range(3)]
    assert "truncated" in skipped["n00000000_corrupt0.JPEG"]
    assert train["files"] == 15 + 3 and train["count"] == 15 and train["class_counts"] == [5, 5, 5]
    images, labels, meta = load_packed(tmp_path / "p", "train")
    assert images.shape[0] == 15 and labels.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    # Grayscale and CMYK files were packed as RGB.
    assert metas["val"]["count"] == 6 and metas["val"]["skipped"] == []
    with pytest.raises(ValueError, match=r"corrupt0\.JPEG: cannot decode .*--strict"):
        pack(generated, size=32, out=tmp_path / "strict", strict=True)


@needs_cifar
def test_packed_dataset(generated, tmp_path):
    pack(generated, size=32, out=tmp_path / "p")
    ds = create_dataset("packed", root=tmp_path / "p", split="train")
    meta = json.loads((tmp_path / "p" / "train" / META_FILE).read_text())
    assert len(ds) == 15 and ds.classes == tuple(wnid(k) for k in range(3)) and ds.image_shape == (3, 32, 32)
    assert ds.mean == pytest.approx(meta["mean"]) and ds.std == pytest.approx(meta["std"])
    assert ds.augmentation.crop_padding == 4 and ds.augmentation.flip
    x, y = next(iter(DeviceLoader(ds, batch_size=8, augment=True, seed=0)))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    val = create_dataset("packed", root=tmp_path / "p", split="val", subset=3)
    assert len(val) == 3 and val.mean == ds.mean
    with pytest.raises(ValueError, match="root is required"):
        create_dataset("packed", split="train")


# ------------------------------------------------------------------ command line
@needs_cifar
def test_cli_generates_and_packs(tmp_path, capsys):
    out = tmp_path / "gen"
    rc, stdout, err = _run_cli(["data", "imagenet-like", "--out", str(out), "--classes", "2", "--train-per-class",
                                "2", "--val-per-class", "1", "--source", str(CIFAR), "--corrupt", "1"], capsys)
    assert rc == 0, err
    assert "train: 4 images" in stdout and (out / "synthetic.json").is_file()
    rc, stdout, err = _run_cli(["data", "pack", str(out), "--size", "16", "--out", str(tmp_path / "p")], capsys)
    assert rc == 0, err
    assert "train: 4 images of 16x16, 2 classes, 1 undecodable files skipped" in stdout
    rc, stdout, err = _run_cli(["data", "pack", str(out), "--size", "16", "--out", str(tmp_path / "s"), "--strict"],
                               capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "corrupt0.JPEG" in err


def _bad_inputs(handmade: Path, tmp: Path) -> list[tuple[list[str], str]]:
    empty = tmp / "empty"
    (empty / "train").mkdir(parents=True)
    mismatch = tmp / "mismatch"
    for split, cls in (("train", "a"), ("val", "b")):
        _write_image(mismatch / split / cls / "x.jpg", 20, 20, 0)
    out = str(tmp / "out")
    return [
        (["data", "pack", str(tmp / "missing"), "--size", "64", "--out", out], "folder not found"),
        (["data", "pack", str(handmade), "--size", "4", "--out", out], "--size must be an integer >= 8"),
        (["data", "pack", str(handmade), "--size", "six", "--out", out], "--size must be an integer >= 8"),
        (["data", "pack", str(handmade), "--size", "6.5", "--out", out], "--size must be an integer >= 8"),
        (["data", "pack", str(empty), "--size", "64", "--out", out], "no class folders"),
        (["data", "pack", str(mismatch), "--size", "64", "--out", out], "class folders differ"),
        (["data", "pack", str(handmade), "--size", "64", "--out", out, "--splits", "test"], "split folder not found"),
        (["data", "pack", str(handmade), "--size", "64"], "required: --out"),
        (["data", "pack", str(handmade), "--size", "64", "--out", out, "--workers", "0"], "--workers must be"),
        (["data"], "required"),
        (["data", "imagenet-like", "--out", out, "--classes", "0"], "classes must be an int >= 1"),
        (["data", "imagenet-like", "--out", out, "--source", str(tmp / "missing")], "not found"),
    ]


def test_cli_errors_exit_2_with_one_line(handmade, tmp_path, capsys):
    for argv, expected in _bad_inputs(handmade, tmp_path):
        rc, stdout, err = _run_cli(argv, capsys)
        assert rc == 2, (argv, rc, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0] and "error" in lines[0], (argv, err)
        assert stdout == "", argv
    assert not (tmp_path / "out").exists()
