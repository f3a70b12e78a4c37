"""pynas.data: IDX and image readers, decode cache, augmentation, resumable device loader, registry."""
from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from pynas import data
from pynas.data import (
    Augmentation,
    DeviceDataset,
    DeviceLoader,
    create_dataset,
    crop_at,
    cutout,
    cutout_at,
    load_cifar10_batches,
    load_image_folder,
    normalize,
    random_crop,
    random_flip,
    read_idx,
    split,
    stratified_indices,
    write_idx,
)
from pynas.data import images as images_module

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("PYNAS_DATA", REPO.parent / "shared" / "data"))
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    # Tests never read or write the user's decode cache.
    monkeypatch.setenv("PYNAS_CACHE", str(tmp_path / "cache"))


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- IDX ---------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_idx_round_trip(tmp_path, suffix, dtype):
    values = (np.arange(2 * 3 * 5) * 7 % 256).astype(dtype).reshape(2, 3, 5)
    path = tmp_path / f"values-idx3{suffix}"
    write_idx(path, values)
    back = read_idx(path)
    assert back.shape == (2, 3, 5)
    np.testing.assert_array_equal(back.numpy(), values)
    if suffix:
        assert path.read_bytes()[:2] == b"\x1f\x8b"


def test_idx_header_is_the_published_format(tmp_path):
    path = tmp_path / "labels-idx1-ubyte"
    write_idx(path, torch.tensor([3, 1, 4], dtype=torch.uint8))
    assert path.read_bytes() == struct.pack(">II", 0x00000801, 3) + bytes([3, 1, 4])
    assert read_idx(path, expected_magic=0x801).tolist() == [3, 1, 4]


def test_idx_wrong_magic_names_file_and_values(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    write_idx(path, np.zeros((2, 4), dtype=np.uint8))  # a 2-d file where images (3-d) are expected
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz: expected IDX magic 0x00000803, got 0x00000802"):
        read_idx(path, expected_magic=0x803)


def test_idx_corrupt_files(tmp_path):
    truncated = tmp_path / "truncated-idx3-ubyte"
    truncated.write_bytes(struct.pack(">IIII", 0x803, 2, 28, 28) + bytes(100))
    with pytest.raises(ValueError, match=r"truncated-idx3-ubyte: expected 1568 data bytes for shape \(2, 28, 28\)"):
        read_idx(truncated)
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x12\x34\x56\x78" + bytes(8))
    with pytest.raises(ValueError, match="garbage: expected an IDX magic"):
        read_idx(garbage)
    bad_gzip = tmp_path / "bad.gz"
    bad_gzip.write_bytes(gzip.compress(struct.pack(">II", 0x801, 3) + bytes(3))[:-10])
    with pytest.raises(ValueError, match="bad.gz: corrupt gzip stream"):
        read_idx(bad_gzip)
    with pytest.raises(FileNotFoundError, match="missing-idx1-ubyte: IDX file not found"):
        read_idx(tmp_path / "missing-idx1-ubyte")


@pytest.mark.skipif(not (FASHION_MNIST / "t10k-labels-idx1-ubyte.gz").is_file(),
                    reason="real Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist_subset():
    ds = create_dataset("fashion-mnist", split="test", subset=200, seed=1)
    assert ds.images.shape == (200, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert ds.num_classes == 10 and ds.classes[0] == "T-shirt/top"
    assert torch.bincount(ds.labels).tolist() == [20] * 10  # the test set is balanced, so is the subset
    assert ds.augmentation == Augmentation(crop_padding=2, flip=False)
    # The subset's own pixel stats are near the published training stats.
    assert abs(ds.images.double().mean().item() / 255 - ds.mean[0]) < 0.03


def test_fashion_mnist_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte\[.gz\]: Fashion-MNIST IDX file not found"):
        create_dataset("fashion-mnist", root=tmp_path)


def test_fashion_mnist_from_written_idx(tmp_path):
    pixels = (np.arange(20 * 28 * 28) % 256).astype(np.uint8).reshape(20, 28, 28)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", pixels)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(20, dtype=np.uint8) % 10)
    ds = create_dataset("fashion-mnist", root=tmp_path, split="test")
    assert ds.images.shape == (20, 1, 28, 28) and ds.labels.dtype == torch.int64
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(19, dtype=np.uint8))
    with pytest.raises(ValueError, match="expected 20 labels"):
        create_dataset("fashion-mnist", root=tmp_path, split="test")


# --- image folders and the decode cache -----------------------------------------------------

def _write_folder(root: Path, sizes=None, mode="RGB") -> dict[str, np.ndarray]:
    """Two classes ('cat', 'dog'), PNG pixels we know exactly plus one JPEG."""
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    written = {}
    for cls, count in (("dog", 2), ("cat", 3)):  # created out of order: reading must sort
        (root / cls).mkdir(parents=True)
        for i in range(count):
            shape = (8, 6, 3) if mode == "RGB" else (8, 6)
            pixels = rng.integers(0, 256, shape, dtype=np.uint8)
            name = f"{cls}/{i:02d}.png"
            Image.fromarray(pixels, mode).save(root / name)
            written[name] = pixels
    Image.fromarray(np.full((8, 6, 3), 200, np.uint8)).save(root / "cat" / "99.jpg", quality=95)
    (root / "cat" / "notes.txt").write_text("not an image")
    return written


def test_image_folder_decodes_sorted_classes(tmp_path):
    written = _write_folder(tmp_path / "set")
    decoded = load_image_folder(tmp_path / "set", cache=False)
    assert decoded.classes == ("cat", "dog")
    assert decoded.images.shape == (6, 3, 8, 6) and decoded.images.dtype == torch.uint8
    assert decoded.labels.tolist() == [0, 0, 0, 0, 1, 1]
    # PNG is lossless: exact pixels, in CHW.
    np.testing.assert_array_equal(decoded.images[1].permute(1, 2, 0).numpy(), written["cat/01.png"])
    np.testing.assert_array_equal(decoded.images[5].permute(1, 2, 0).numpy(), written["dog/01.png"])
    # JPEG is lossy: a flat colour comes back within a step or two.
    assert (decoded.images[3].int() - 200).abs().max() <= 2


def test_image_folder_grayscale_keeps_one_channel(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        Image.fromarray(np.full((4, 4), 7 if cls == "a" else 9, np.uint8), "L").save(tmp_path / cls / "x.png")
    decoded = load_image_folder(tmp_path, cache=False)
    assert decoded.images.shape == (2, 1, 4, 4)
    assert decoded.images[:, 0, 0, 0].tolist() == [7, 9]


def test_image_folder_size_mismatch_is_named(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    (tmp_path / "a").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a" / "0.png")
    Image.fromarray(np.zeros((5, 4, 3), np.uint8)).save(tmp_path / "a" / "1.png")
    with pytest.raises(ValueError, match=r"1.png: expected 4x4 pixels like .*0.png, got 4x5"):
        load_image_folder(tmp_path, cache=False)


def test_corrupt_image_is_named(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    pytest.importorskip("PIL")
    with pytest.raises(ValueError, match="broken.jpg: cannot decode image"):
        load_image_folder(tmp_path, cache=False)


def test_decode_cache_hit_and_invalidation(tmp_path, monkeypatch):
    _write_folder(tmp_path / "set")
    cache_dir = tmp_path / "cache"
    first = load_image_folder(tmp_path / "set")
    assert len(list(cache_dir.glob("imagefolder-*.npz"))) == 1
    assert not list(cache_dir.glob("*.tmp"))  # the atomic write left nothing behind

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the cache should have been used")

    monkeypatch.setattr(images_module, "decode_image_files", no_decoding)
    hit = load_image_folder(tmp_path / "set")
    assert torch.equal(hit.images, first.images) and torch.equal(hit.labels, first.labels)
    assert hit.classes == first.classes

    # A new file changes the key: the folder is decoded again.
    monkeypatch.undo()
    monkeypatch.setenv("PYNAS_CACHE", str(cache_dir))
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(np.zeros((8, 6, 3), np.uint8)).save(tmp_path / "set" / "dog" / "02.png")
    assert len(load_image_folder(tmp_path / "set").labels) == 7
    assert len(list(cache_dir.glob("imagefolder-*.npz"))) == 2

    # A damaged cache file is ignored with a warning, not trusted.
    for cached in cache_dir.glob("imagefolder-*.npz"):
        cached.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="ignoring unreadable decode cache"):
        assert len(load_image_folder(tmp_path / "set").labels) == 7


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope: image folder not found"):
        create_dataset("imagefolder", root=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no class folders in .*empty"):
        create_dataset("imagefolder", root=tmp_path / "empty")
    (tmp_path / "empty" / "cls").mkdir()
    with pytest.raises(ValueError, match=r"cls: class folder has no images"):
        create_dataset("imagefolder", root=tmp_path / "empty")
    with pytest.raises(ValueError, match="root is required"):
        create_dataset("imagefolder")


def test_imagefolder_dataset_stats_and_splits(tmp_path):
    _write_folder(tmp_path / "train")
    ds = create_dataset("imagefolder", root=tmp_path)
    assert ds.name == "imagefolder/train" and ds.num_classes == 2
    pixels = ds.images.double() / 255
    np.testing.assert_allclose(ds.mean, pixels.mean(dim=(0, 2, 3)).numpy(), rtol=1e-6)
    np.testing.assert_allclose(ds.std, pixels.std(dim=(0, 2, 3), unbiased=False).numpy(), rtol=1e-6)
    with pytest.raises(FileNotFoundError, match="imagefolder split='test' reads root/test"):
        create_dataset("imagefolder", root=tmp_path, split="test")


# --- CIFAR-10 ------------------------------------------------------------------------------

def _write_cifar_batches(root: Path, per_batch: int = 10) -> np.ndarray:
    """Fake python batches like the published ones (bytes keys, uint8 [N, 3072]); returns all train data."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    train = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        pixels = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        with open(root / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": pixels}, f, protocol=2)
        if name != "test_batch":
            train.append((pixels, labels))
    return np.concatenate([p for p, _ in train]), sum((l for _, l in train), [])


def test_cifar10_python_batches(tmp_path):
    pixels, labels = _write_cifar_batches(tmp_path / "cifar-10-batches-py")
    decoded = load_cifar10_batches(tmp_path, train=True)
    assert decoded.images.shape == (50, 3, 32, 32)
    assert decoded.labels.tolist() == labels
    # Row layout: 1024 red values, then green, then blue, each 32x32 row-major.
    assert decoded.images[7, 1, 2, 3] == pixels[7, 1024 + 2 * 32 + 3]
    test = create_dataset("cifar10", root=tmp_path, split="test")
    assert len(test) == 10 and test.classes[0] == "airplane" and test.mean[0] == pytest.approx(0.4914, abs=1e-4)


def test_cifar10_batches_refuse_code(tmp_path):
    _write_cifar_batches(tmp_path)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(ValueError, match=r"test_batch: expected a CIFAR-10 python batch .*refusing to load"):
        load_cifar10_batches(tmp_path, train=False)


def _write_split_file(path: Path, train, valid) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"train": ["int", [str(i) for i in train]], "valid": ["int", [str(i) for i in valid]]}))


def test_nb201_split_from_batches_is_exact(tmp_path):
    _write_cifar_batches(tmp_path / "cifar10")
    valid = list(range(1, 50, 2))
    _write_split_file(tmp_path / "nasbench201" / "eps_cifar-split.txt", list(range(0, 50, 2)), valid)
    full = load_cifar10_batches(tmp_path / "cifar10", train=True)
    ds = create_dataset("nb201-cifar10", root=tmp_path / "cifar10", split="valid")
    assert ds.name == "nb201-cifar10/valid"
    assert torch.equal(ds.images, full.images[valid]) and torch.equal(ds.labels, full.labels[valid])
    assert len(create_dataset("nb201-cifar10", root=tmp_path / "cifar10", split="test")) == 10


def test_nb201_malformed_split_file(tmp_path):
    _write_cifar_batches(tmp_path / "cifar10")
    split_file = tmp_path / "nasbench201" / "eps_cifar-split.txt"
    split_file.parent.mkdir()
    split_file.write_text(json.dumps({"train": [1, 2], "test": [3]}))
    with pytest.raises(ValueError, match=r"eps_cifar-split.txt: expected JSON with keys 'train' and 'valid'"):
        create_dataset("nb201-cifar10", root=tmp_path / "cifar10", split="train")
    _write_split_file(split_file, [0, 1], [1, 2])
    with pytest.raises(ValueError, match="overlap"):
        create_dataset("nb201-cifar10", root=tmp_path / "cifar10", split="train")
    _write_split_file(split_file, [0, 1], [50])
    with pytest.raises(ValueError, match=r"'valid' indices must lie in 0..49"):
        create_dataset("nb201-cifar10", root=tmp_path / "cifar10", split="valid")


@pytest.mark.skipif(not (DATA_DIR / "cifar10" / "test" / "airplane").is_dir(),
                    reason=f"real CIFAR-10 JPEGs not found under {DATA_DIR}/cifar10 (set PYNAS_DATA)")
def test_real_cifar10_subset():
    ds = create_dataset("cifar10", root=DATA_DIR / "cifar10", split="test", subset=500, seed=3)
    assert ds.images.shape == (500, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.classes == data.images.CIFAR10_CLASSES
    assert torch.bincount(ds.labels).tolist() == [50] * 10
    assert ds.augmentation == Augmentation(crop_padding=4, flip=True)
    measured = (ds.images.double() / 255).mean(dim=(0, 2, 3))
    assert torch.allclose(measured, torch.tensor(ds.mean, dtype=torch.float64), atol=0.03)
    again = create_dataset("cifar10", root=DATA_DIR / "cifar10", split="test", subset=500, seed=3)
    assert torch.equal(again.images, ds.images)  # second load: from the cache, same subset


@pytest.mark.skipif(not (DATA_DIR / "nasbench201" / "eps_cifar-split.txt").is_file(),
                    reason=f"NAS-Bench-201 split file not found under {DATA_DIR}/nasbench201")
def test_real_nb201_split_file():
    parts = data.read_nb201_split(DATA_DIR / "nasbench201" / "eps_cifar-split.txt", size=50000)
    assert len(parts["train"]) == len(parts["valid"]) == 25000
    assert torch.equal(torch.sort(torch.cat([parts["train"], parts["valid"]])).values, torch.arange(50000))


def test_create_dataset_argument_errors(tmp_path):
    known = "cifar10, fashion-mnist, imagefolder, imagenet, nb201-cifar10, packed"
    with pytest.raises(ValueError, match=rf"unknown dataset 'cifar100'; known: {known}"):
        create_dataset("cifar100")
    with pytest.raises(ValueError, match=r"split must be one of 'train', 'test', got 'valid'"):
        create_dataset("cifar10", split="valid")
    with pytest.raises(ValueError, match="subset must be None or an int >= 1"):
        create_dataset("cifar10", subset=0)
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        create_dataset("cifar10", seed=-1)
    with pytest.raises(TypeError):
        create_dataset("cifar10", None)  # keyword-only
    assert data.list_datasets() == ["cifar10", "fashion-mnist", "imagefolder", "imagenet", "nb201-cifar10", "packed"]


# --- augmentation ----------------------------------------------------------------------------

def _batch(b=4, c=3, h=8, w=8, dtype=torch.uint8) -> torch.Tensor:
    return (torch.arange(b * c * h * w) % 251 + 1).to(dtype).view(b, c, h, w)  # no zeros: padding is visible


def test_crop_keeps_shape_and_matches_hand_shift():
    x = _batch()
    assert random_crop(x, padding=4, generator=_generator(0)).shape == x.shape
    # The default padding is H // 8 (4 on 32x32): offsets then span 0..8.
    big = torch.ones(2, 1, 32, 32)
    assert torch.equal(random_crop(big, generator=_generator(0)),
                       random_crop(big, padding=4, generator=_generator(0)))
    # Offset (padding + dy, padding + dx) moves the content up by dy and left by dx, zeros entering.
    dy, dx = 1, -2
    out = crop_at(x, top=torch.full((4,), 2 + dy), left=torch.full((4,), 2 + dx), padding=2)
    expected = torch.zeros_like(x)
    expected[:, :, : 8 - dy, -dx:] = x[:, :, dy:, : 8 + dx]
    assert torch.equal(out, expected)
    assert torch.equal(crop_at(x, top=torch.full((4,), 2), left=torch.full((4,), 2), padding=2), x)


def test_random_crop_is_the_drawn_shift_per_image():
    x = _batch(b=6)
    out = random_crop(x, padding=3, generator=_generator(5))
    g = _generator(5)  # the documented draw order: tops, then lefts, uniform in 0..2p
    tops, lefts = torch.randint(0, 7, (6,), generator=g), torch.randint(0, 7, (6,), generator=g)
    padded = torch.nn.functional.pad(x, (3, 3, 3, 3))
    for i in range(6):
        assert torch.equal(out[i], padded[i, :, tops[i]:tops[i] + 8, lefts[i]:lefts[i] + 8])
    # Same on float input.
    assert torch.equal(random_crop(x.float(), padding=3, generator=_generator(5)), out.float())


def test_flip():
    x = _batch(b=64)
    assert torch.equal(random_flip(x, generator=_generator(0), p=1.0), x.flip(3))
    assert torch.equal(random_flip(x, generator=_generator(0), p=0.0), x)
    out = random_flip(x, generator=_generator(0))
    flipped = (out == x.flip(3)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert bool((flipped ^ kept).all())  # every image is either mirrored or untouched
    assert 16 < int(flipped.sum()) < 48


def test_cutout_zeroes_a_square_of_the_right_size():
    x = torch.ones(3, 2, 32, 32)
    out = cutout_at(x, center_y=torch.tensor([16, 0, 31]), center_x=torch.tensor([16, 0, 20]), length=16)
    assert torch.equal(out[0, :, 8:24, 8:24], torch.zeros(2, 16, 16))
    # Full, corner-clipped (8x8), bottom-clipped (rows 23..31).
    assert [int((img[0] == 0).sum()) for img in out] == [256, 64, 9 * 16]
    assert bool((out[:, 0] == out[:, 1]).all())  # the same square in every channel
    rand = cutout(torch.ones(50, 1, 32, 32), generator=_generator(2))  # length defaults to H // 2 = 16
    for img in rand[:, 0]:
        rows, cols = torch.nonzero(img == 0, as_tuple=True)
        height, width = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert len(rows) == height * width  # a filled rectangle
        assert height <= 16 and width <= 16
        assert height == 16 or rows.min() == 0 or rows.max() == 31  # only the border clips it
        assert width == 16 or cols.min() == 0 or cols.max() == 31


def test_normalize():
    x = _batch(c=2)
    out = normalize(x, mean=(0.5, 0.25), std=(0.5, 0.25))
    assert out.dtype == torch.float32
    stats = torch.tensor([0.5, 0.25], dtype=torch.float64).view(1, 2, 1, 1)
    expected = (x.double() / 255 - stats) / stats
    torch.testing.assert_close(out.double(), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(normalize(x.float() / 255, mean=(0.5, 0.25), std=(0.5, 0.25)), out)
    as_tensors = normalize(x, mean=torch.tensor([0.5, 0.25]), std=torch.tensor([0.5, 0.25]))
    torch.testing.assert_close(as_tensors, out)
    assert normalize(x, mean=(0.5, 0.25), std=(0.5, 0.25), dtype=torch.bfloat16).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="expected 2 channel means"):
        normalize(x, mean=(0.5,), std=(0.5,))


def test_same_seed_same_batch():
    recipe = Augmentation(crop_padding=4, flip=True, cutout=16)
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    stats = dict(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    a = recipe(x, generator=_generator(7), **stats)
    b = recipe(x, generator=_generator(7), **stats)
    c = recipe(x, generator=_generator(8), **stats)
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="crop_padding must be an int >= 0"):
        Augmentation(crop_padding=-1)
    with pytest.raises(ValueError, match="expected a torch.Generator"):
        random_flip(x, generator=7)


# --- loader -------------------------------------------------------------------------------------

def _id_dataset(n=50) -> DeviceDataset:
    """Label i for image i, so batches show which images they hold."""
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=_generator(0))
    return DeviceDataset(images=images, labels=torch.arange(n), classes=[str(i) for i in range(n)],
                         mean=(0.5,) * 3, std=(0.25,) * 3,
                         augmentation=Augmentation(crop_padding=2, flip=True, cutout=4))


def test_loader_epoch_covers_everything_once():
    ds = _id_dataset()
    loader = DeviceLoader(ds, batch_size=8, seed=1)
    assert len(loader) == 7 and len(DeviceLoader(ds, batch_size=8, drop_last=True)) == 6
    batches = list(loader)
    assert [len(y) for _, y in batches] == [8] * 6 + [2]
    seen = torch.cat([y for _, y in batches])
    assert sorted(seen.tolist()) == list(range(50)) and seen.tolist() != list(range(50))
    assert loader.epoch == 1
    second = torch.cat([y for _, y in loader])
    assert not torch.equal(second, seen)  # a new order each epoch
    same_seed = DeviceLoader(ds, batch_size=8, seed=1)
    assert torch.equal(torch.cat([y for _, y in same_seed]), seen)  # the order is a function of the seed
    x, _ = batches[0]
    assert x.dtype == torch.float32 and x.shape == (8, 3, 8, 8)
    dropped = [len(y) for _, y in DeviceLoader(ds, batch_size=8, drop_last=True)]
    assert dropped == [8] * 6
    plain = DeviceLoader(ds, batch_size=50, shuffle=False)
    x, y = next(iter(plain))
    assert y.tolist() == list(range(50))
    torch.testing.assert_close(x, normalize(ds.images, mean=ds.mean, std=ds.std))


def test_loader_resume_mid_epoch_is_exact():
    ds = _id_dataset()
    original = DeviceLoader(ds, batch_size=8, augment=True, seed=3)
    iterator = iter(original)
    for _ in range(3):
        next(iterator)
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)  # as a checkpoint would
    rest = list(iterator) + list(original)  # the rest of this epoch, and the next one
    buffer.seek(0)
    resumed = DeviceLoader(ds, batch_size=8, augment=True, seed=3)
    resumed.load_state_dict(torch.load(buffer))
    assert resumed.epoch == 0 and resumed.position == 24
    again = list(resumed) + list(resumed)
    assert len(again) == len(rest) == 4 + 7
    for (xa, ya), (xb, yb) in zip(rest, again):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)
    with pytest.raises(ValueError, match="state has batch_size=8, this loader 16"):
        DeviceLoader(ds, batch_size=16).load_state_dict(original.state_dict())


def test_loader_stale_iterator_and_epoch_rollover():
    ds = _id_dataset(16)
    loader = DeviceLoader(ds, batch_size=8)
    old = iter(loader)
    next(old)
    list(loader)  # a newer iterator finishes the epoch
    with pytest.raises(RuntimeError, match="superseded"):
        next(old)
    # Consuming exactly len() batches without exhausting the iterator still rolls over to the next epoch.
    for _, _ in zip(range(len(loader)), loader):
        pass
    assert len(list(loader)) == 2 and loader.epoch == 3


def test_split_and_stratified_indices():
    labels = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    picked = stratified_indices(labels, 10, seed=0)
    assert torch.bincount(labels[picked]).tolist() == [6, 3, 1]
    assert torch.equal(picked, stratified_indices(labels, 10, seed=0))
    assert not torch.equal(picked, stratified_indices(labels, 10, seed=1))
    assert len(stratified_indices(labels, 7, seed=0)) == 7
    ds = DeviceDataset(images=torch.zeros(100, 1, 2, 2, dtype=torch.uint8), labels=labels, classes=["a", "b", "c"],
                       mean=(0.5,), std=(0.5,))
    train, valid = split(ds, valid_fraction=0.2, seed=0)
    assert len(train) == 80 and torch.bincount(valid.labels).tolist() == [12, 6, 2]
    assert valid.mean == ds.mean and train.name == "dataset/train"
    train, valid = split(ds, indices=([0, 1, 2], [99]))
    assert train.labels.tolist() == [0, 0, 0] and valid.labels.tolist() == [2]
    with pytest.raises(ValueError, match="overlap"):
        split(ds, indices=([0, 1], [1]))
    with pytest.raises(ValueError, match="exactly one of"):
        split(ds)
    with pytest.raises(ValueError, match=r"indices must lie in 0..99"):
        ds.subset([100])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_loader_on_cuda_matches_cpu():
    ds = _id_dataset()
    cpu = list(DeviceLoader(ds, batch_size=8, augment=True, seed=2))
    gpu = list(DeviceLoader(ds.to("cuda"), batch_size=8, augment=True, seed=2))
    for (xc, yc), (xg, yg) in zip(cpu, gpu):
        assert xg.device.type == "cuda"
        assert torch.equal(yc, yg.cpu())
        torch.testing.assert_close(xc, xg.cpu())
