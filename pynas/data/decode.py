"""Per-image work of the streaming loader: crop geometry, reduced-size JPEG decode, crop+resize.

Everything here runs in the loader's worker processes, one image at a time,
and depends only on the file and a fixed block of uniform draws, so a sample
comes out the same whichever worker (or rank, or resumed run) decodes it.

Reduced-size decode: a JPEG's DCT can be decoded straight to 1/2, 1/4 or 1/8
of its size (libjpeg scaling, Pillow's `Image.draft`), which is several times
cheaper than a full decode followed by a downscale. The scale chosen is the
smallest image whose crop region is still at least as large as the output in
both directions, so the final resize still only shrinks (or keeps) and the
output quality is that of a full decode. The crop and the resize are then one
`Image.resize(..., box=...)` call (one resampling pass, antialiased like
torchvision's PIL path).

Region decode (`decoder="libjpeg"`, the default where pynas._jpeg was built): the
crop's part of the file is decoded, at a power-of-two DCT scale, and resized in
the same call (csrc/jpeg/region_decode.cpp): rows below the crop are never read,
rows above are only entropy-decoded, columns outside skip the inverse DCT. The
resize is Pillow's antialiased bilinear filter (the same taps and fixed point,
output within one level of Pillow's on the same decoded pixels). Files it does
not take (CMYK, no end marker at the end of the file, PNG) go the Pillow way.

Draw layout (`DRAWS` uniforms in [0, 1) per sample, from the sample's own
generator): 0-19 the ten RandomResizedCrop tries (area, log-ratio), 20-21 the
crop's top and left, 22 the flip, 23-25 the colour-jitter order, 26-28 the
brightness, contrast and saturation factors. Fixed slots keep the parts
independent: turning colour jitter on does not move any crop.
"""
from __future__ import annotations

import io
import math
import struct
from typing import Sequence

import numpy as np

try:  # built where libjpeg-turbo's headers were found (setup.py, PYNAS_JPEG)
    from pynas import _jpeg
except ImportError:
    _jpeg = None

__all__ = [
    "DRAWS",
    "DECODERS",
    "check_decoder",
    "libjpeg_available",
    "DecodeError",
    "random_resized_crop_box",
    "centre_crop_box",
    "draft_scale",
    "open_image",
    "crop_resize",
    "decode_sample",
    "jitter_coefficients",
]

DRAWS = 29
_CROP_TRIES = 10
_TOP, _LEFT, _FLIP, _ORDER, _FACTORS = 20, 21, 22, 23, 26
# A final resize that still shrinks by 3x or more is first reduced by whole factors
# (Pillow: "indistinguishable from fair resampling in most cases"); after the draft
# this only happens for very large images (beyond the 1/8 scale) or tiny outputs.
REDUCING_GAP = 3.0
_FORMATS = ("JPEG", "PNG")  # what image folders hold (pynas.data.images.IMAGE_SUFFIXES); others are unreadable


DECODERS = ("auto", "libjpeg", "pillow")
_JPEG_START = b"\xff\xd8\xff"


def libjpeg_available() -> bool:
    """Whether pynas._jpeg (region JPEG decoding on libjpeg-turbo) was built."""
    return _jpeg is not None


def check_decoder(decoder, what: str) -> str:
    """`decoder` checked: "auto" (libjpeg where built, else Pillow), "libjpeg" (an error where not
    built) or "pillow"."""
    if decoder not in DECODERS:
        raise ValueError(f"{what} must be one of {', '.join(DECODERS)}, got {decoder!r}")
    if decoder == "libjpeg" and _jpeg is None:
        raise ValueError(f"{what} is libjpeg but pynas was built without pynas._jpeg (libjpeg-turbo >= 1.5 "
                         "headers were not found: install libjpeg-turbo's dev package and reinstall pynas, "
                         "or use auto or pillow)")
    return decoder


class DecodeError(ValueError):
    """An image file that cannot be read or decoded; the message is the decoder's reason."""


def _pillow():
    try:
        from PIL import Image
    except ImportError as err:
        raise ImportError("streaming image folders needs Pillow: pip install pillow") from err
    return Image


def random_resized_crop_box(
    width: int,
    height: int,
    uniforms: Sequence[float],
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """(left, top, crop_width, crop_height) of a RandomResizedCrop, torchvision's algorithm.

    Up to ten tries: an area uniform in `scale` x the image area and an
    aspect ratio log-uniform in `ratio`; the first whose rounded width and
    height fit the image is placed uniformly. If none fits, the whole image
    is taken, narrowed to the nearest ratio in range and centred. The draws
    are `uniforms[0:20]` (area, ratio per try) and `uniforms[20:22]` (top, left).
    """
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for attempt in range(_CROP_TRIES):
        target_area = area * (scale[0] + (scale[1] - scale[0]) * uniforms[2 * attempt])
        aspect = math.exp(log_lo + (log_hi - log_lo) * uniforms[2 * attempt + 1])
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = min(int(uniforms[_TOP] * (height - h + 1)), height - h)
            left = min(int(uniforms[_LEFT] * (width - w + 1)), width - w)
            return left, top, w, h
    return ratio_clamped_centre_crop(width, height, ratio)


def ratio_clamped_centre_crop(width: int, height: int, ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """(left, top, crop_width, crop_height): RandomResizedCrop's fallback, the whole image narrowed to the
    nearest aspect ratio in `ratio` and centred."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def centre_crop_box(width: int, height: int, *, image_size: int, resize_size: int) -> tuple[float, float, float, float]:
    """The region (left, top, right, bottom) of the original image that Resize(resize_size) then
    CenterCrop(image_size) would show, as torchvision computes both (the longer side truncated, the
    crop offset rounded), so that one resize of this box gives the same view."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(resize_size * long / short)
    new_w, new_h = (resize_size, new_long) if width <= height else (new_long, resize_size)
    top = int(round((new_h - image_size) / 2.0))
    left = int(round((new_w - image_size) / 2.0))
    sx, sy = width / new_w, height / new_h
    return left * sx, top * sy, (left + image_size) * sx, (top + image_size) * sy


def draft_scale(crop_width: float, crop_height: float, size: int) -> int:
    """The largest JPEG decode reduction (1, 2, 4 or 8) that keeps the crop at least `size` pixels
    in both directions."""
    room = min(crop_width, crop_height) / size
    for s in (8, 4, 2):
        if room >= s:
            return s
    return 1


def open_image(path):
    """Open `path` (or a binary file object) lazily (only the header is read); raises DecodeError when it
    is not a readable image."""
    Image = _pillow()
    try:
        return Image.open(path, formats=_FORMATS)
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError) as err:
        raise DecodeError(_reason(err)) from err


def _reason(err: BaseException) -> str:
    return str(err) or type(err).__name__


def crop_resize(image, box: tuple[float, float, float, float], size: int, *, reduce: bool = True):
    """Decode `image` (as opened by open_image) and return the region `box` (original pixel coordinates)
    resized to size x size, as an "RGB" or "L" image, plus the (width, height) actually decoded.

    With `reduce`, a JPEG is decoded at the draft scale of the crop (see draft_scale); the box is
    mapped into the reduced image (libjpeg's pixel k covers original pixels [k s, (k + 1) s)).
    Modes other than RGB and L (CMYK, palette, alpha, 16-bit) are converted to RGB before resizing.
    """
    Image = _pillow()
    left, top, right, bottom = box
    scale = 1
    try:
        if reduce and image.format == "JPEG":
            s = draft_scale(right - left, bottom - top, size)
            if s > 1:
                width, height = image.size
                drafted = image.draft("RGB", (width // s, height // s))
                if drafted is not None:
                    scale = width / drafted[1][2]
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError) as err:
        raise DecodeError(_reason(err)) from err
    decoded = image.size
    if scale != 1:
        left, top, right, bottom = left / scale, top / scale, right / scale, bottom / scale
        # Float error must not push the box past the reduced image's edge.
        right, bottom = min(right, decoded[0]), min(bottom, decoded[1])
    out = image.resize((size, size), resample=Image.Resampling.BILINEAR, box=(left, top, right, bottom),
                       reducing_gap=REDUCING_GAP)
    return out, decoded


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise DecodeError(err.strerror or str(err)) from err


def _sample_box(width: int, height: int, train: bool, image_size: int, resize_size: int, uniforms):
    """The region of a width x height image a sample shows, and whether it is mirrored."""
    if train:
        left, top, w, h = random_resized_crop_box(width, height, uniforms)
        return (left, top, left + w, top + h), bool(uniforms[_FLIP] < 0.5)
    return centre_crop_box(width, height, image_size=image_size, resize_size=resize_size), False


def decode_sample(
    path: str,
    *,
    train: bool,
    image_size: int,
    resize_size: int,
    uniforms: Sequence[float] | None,
    reduce: bool = True,
    decoder: str = "auto",
) -> np.ndarray:
    """One training (RandomResizedCrop + flip) or evaluation (resize + centre crop) sample of `path`,
    as uint8 [image_size, image_size, 3]. Raises DecodeError for unreadable files.

    decoder: "auto"/"libjpeg" decode JPEGs by region when pynas._jpeg exists (see the module's
    docstring), "pillow" always with Pillow (at the draft scale when `reduce`)."""
    data = _read(path) if decoder != "pillow" and _jpeg is not None else None
    if data is not None and data.startswith(_JPEG_START):
        try:
            width, height = _jpeg.image_size(data)  # a tenth of what opening it with Pillow costs
        except ValueError:
            pass  # Pillow, below, names what is wrong with the file
        else:
            if width >= 1 and height >= 1:
                box, flip = _sample_box(width, height, train, image_size, resize_size, uniforms)
                try:
                    raw = _jpeg.decode_crop(data, box, (image_size, image_size), flip, True)
                except NotImplementedError:
                    pass  # CMYK or no end marker: Pillow's full decode below
                except ValueError as err:
                    raise DecodeError(str(err)) from err
                else:
                    return np.frombuffer(raw, dtype=np.uint8).reshape(image_size, image_size, 3)
    with open_image(io.BytesIO(data) if data is not None else path) as image:
        width, height = image.size
        if width < 1 or height < 1:
            raise DecodeError(f"empty image ({width}x{height})")
        box, flip = _sample_box(width, height, train, image_size, resize_size, uniforms)
        out, _ = crop_resize(image, box, image_size, reduce=reduce)
    pixels = np.asarray(out)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    if flip:
        pixels = pixels[:, ::-1]
    return pixels


def jitter_coefficients(uniforms: Sequence[float], strength: float) -> np.ndarray:
    """Colour jitter as torchvision's ColorJitter(strength, strength, strength) draws it, in the form the
    device applies: float32 [3 steps, 3] rows (a, b, c) meaning x <- clamp(a x + b gray(x) + c mean(gray(x)), 0, 1).

    The three adjustments (brightness b: x b; contrast c: blend with the mean grey; saturation s: blend
    with the grey image) come in a random order, each factor uniform in [max(0, 1 - strength), 1 + strength].
    """
    lo, hi = max(0.0, 1.0 - strength), 1.0 + strength
    factors = [lo + (hi - lo) * uniforms[_FACTORS + k] for k in range(3)]
    order = np.argsort(np.asarray(uniforms[_ORDER:_ORDER + 3]), kind="stable")
    rows = np.zeros((3, 3), dtype=np.float32)
    for step, op in enumerate(order.tolist()):
        f = factors[op]
        rows[step] = ((f, 0.0, 0.0), (f, 0.0, 1.0 - f), (f, 1.0 - f, 0.0))[op]
    return rows
