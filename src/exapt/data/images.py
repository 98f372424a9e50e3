"""Image inputs: arrays and folders of image files -> float32 [N, C, H, W] in [0, 1].

An image `Table` (kind "image") holds one float32 array [N, C, H, W] with pixels in
[0, 1]; image backbones take it from there (the `cnn` as it is, `efficientnet-lite0`
resized and scaled its own way, `mlp` flattened). What reaches a Table is checked here,
so a bad file fails with one line that names it:

    x, labels = read_npz("digits.npz")                    # arrays x [N,H,W] | [N,C,H,W] | [N,H,W,C], y [N]
    x, labels = read_image_folder("photos/", size=64)     # photos/<class>/<file>.png|.jpg|...
    x = resize_images(x, 32)                              # [N, C, 32, 32]
    small = pool_like_optdigits(mnist)                    # [N, 1, 28, 28] -> [N, 1, 8, 8], UCI optdigits style

`pool_like_optdigits` makes MNIST look like scikit-learn's 8x8 digits (UCI optdigits), so
the two form a domain pair with the same label set and input shape: a real shift
(another writer population, scanner and normalisation), not a change of format.
"""
from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from exapt.errors import ExaptError

#: Extensions read from a folder of images (through Pillow).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
# Pillow modes that hold one grey channel; anything else is read as RGB (alpha dropped).
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


def as_images(x, source: str, name: str = "x") -> np.ndarray:
    """An array of images -> float32 [N, C, H, W] in [0, 1], or a one-line ExaptError.

    Layouts: [N, H, W] (grey), [N, C, H, W] or [N, H, W, C] with C in 1, 3, 4 (channels
    first wins when both ends could be channels). Integer pixels must be 0..255 (scaled
    by 1/255); float pixels must already be in [0, 1]."""
    x = np.asarray(x)
    where = f"{source}: array {name!r}"
    if x.dtype == bool:
        x = x.astype(np.uint8) * 255
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise ExaptError(f"{where} holds {x.dtype} values; images must be numbers (uint8 0..255 or float 0..1)")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if x.shape[1] not in (1, 3, 4):
            if x.shape[3] not in (1, 3, 4):
                raise ExaptError(f"{where} has shape {x.shape}: cannot tell the channel axis "
                                 "(expected [N,H,W], [N,C,H,W] or [N,H,W,C] with C = 1, 3 or 4)")
            x = x.transpose(0, 3, 1, 2)
    else:
        raise ExaptError(f"{where} has shape {x.shape}; expected [N,H,W], [N,C,H,W] or [N,H,W,C]")
    if x.shape[0] == 0:
        raise ExaptError(f"{where} holds no images")
    if min(x.shape[2:]) < 1:
        raise ExaptError(f"{where} has shape {x.shape}: images must be at least 1x1")
    if np.issubdtype(x.dtype, np.floating):
        bad = ~np.isfinite(x)
        if bad.any():
            i = int(np.flatnonzero(bad.reshape(len(x), -1).any(1))[0])
            raise ExaptError(f"{where}: image {i + 1} has NaN or infinite pixels")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1:
            raise ExaptError(f"{where}: float pixels must be in [0, 1] (found {lo:g}..{hi:g}); "
                             "divide by 255, or store uint8")
        return np.ascontiguousarray(x, dtype=np.float32)
    lo, hi = int(x.min()), int(x.max())
    if lo < 0 or hi > 255:
        raise ExaptError(f"{where}: integer pixels must be in 0..255 (found {lo}..{hi})")
    return np.ascontiguousarray(x, dtype=np.float32) / np.float32(255)


def read_npz(path: Path, label: str = "y", require_label: bool = True) -> tuple[np.ndarray, list[str] | None]:
    """Images from array `x` of a .npz file, labels from array `label` (default `y`)."""
    if not zipfile.is_zipfile(path):  # np.load would try to unpickle it
        raise ExaptError(f"{path}: not a readable .npz file (save it with np.savez(path, x=images, y=labels))")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise ExaptError(f"{path}: holds Python objects (pickled); save labels as a numeric or string "
                             "array, e.g. np.savez(path, x=x, y=np.asarray(labels, dtype=str))") from None
        raise ExaptError(f"{path}: not a readable .npz file ({e})") from None
    except (OSError, EOFError) as e:
        raise ExaptError(f"{path}: not a readable .npz file ({e})") from None
    if "x" not in arrays:
        raise ExaptError(f"{path}: no array 'x' (the images); arrays found: {', '.join(arrays) or 'none'}")
    x = as_images(arrays["x"], str(path))
    key = label if label in arrays else "y"
    if key not in arrays:
        if require_label:
            raise ExaptError(f"{path}: no array {label!r} or 'y' (the labels); arrays found: {', '.join(arrays)}")
        return x, None
    y = np.asarray(arrays[key])
    if y.ndim != 1 or len(y) != len(x):
        raise ExaptError(f"{path}: array {key!r} has shape {y.shape}; expected one label per image ({len(x)},)")
    return x, [_label_text(v, i, key, path) for i, v in enumerate(y.tolist(), start=1)]


def _label_text(v, i: int, key: str, path: Path) -> str:
    if isinstance(v, float):
        if not np.isfinite(v):
            raise ExaptError(f"{path}: array {key!r}, image {i}: label is NaN")
        return str(int(v)) if v.is_integer() else str(v)
    s = str(v).strip()
    if not s:
        raise ExaptError(f"{path}: array {key!r}, image {i}: label is empty")
    return s


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)


def image_folder_files(folder: Path, require_label: bool = True) -> tuple[list[Path], list[str] | None]:
    """The image files of a folder in reading order, with their classes (the sub-folder
    names), or None when the images lie loose in `folder` and labels are not required."""
    classes = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    loose = _image_files(folder)
    if classes:
        if loose:
            raise ExaptError(f"{folder}: {loose[0].name} lies beside the class folders; put every image in the "
                             "sub-folder of its class")
        files, labels = [], []
        for d in classes:
            found = _image_files(d)
            if not found:
                raise ExaptError(f"{d}: class folder has no image files ({', '.join(IMAGE_EXTENSIONS)})")
            files += found
            labels += [d.name] * len(found)
    elif loose and not require_label:
        files, labels = loose, None
    else:
        raise ExaptError(f"{folder}: no class folders; put the images of each class in a sub-folder named after "
                         "the class (photos/cat/1.png, photos/dog/2.png, ...)")
    return files, labels


def check_not_image_less(folder: Path) -> None:
    """A folder given as data that holds no image at all (empty, or a folder of data
    files): say that, rather than what some option does to images."""
    try:
        entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
        inside = entries + [p for d in entries if d.is_dir() for p in d.iterdir()]
    except OSError as e:
        raise ExaptError(f"{folder}: cannot read the folder ({e.strerror or e})") from None
    if not entries:
        raise ExaptError(f"{folder} is an empty folder (no class folders, no images); give a data file, or a folder "
                         "with one sub-folder of images per class")
    if not any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in inside):
        first = sorted(p.name for p in entries)[0]
        raise ExaptError(f"{folder} is a folder without images (it holds {first}, ...); give the data file itself, "
                         "or a folder with one sub-folder of images per class")


def read_image_folder(folder: Path, size: int | None = None, require_label: bool = True
                      ) -> tuple[np.ndarray, list[str] | None]:
    """One sub-folder per class, named by the class; or, when labels are not required,
    image files directly in `folder`. Images of differing sizes need `size` (every image
    is resized to size x size); colour wins over grey when both occur."""
    files, labels = image_folder_files(folder, require_label)
    return _read_image_files(folder, files, size), labels


def _read_image_files(folder: Path, files: list[Path], size: int | None) -> np.ndarray:
    """The images of `files` (listed by image_folder_files) as one float32 array [N, C, H, W]."""
    from PIL import Image  # heavy: imported on first use

    images, modes = [], set()
    for f in files:
        try:
            with Image.open(f) as im:
                im.load()
                modes.add("L" if im.mode in _GREY_MODES else "RGB")
                images.append(im.copy())
        except Exception as e:  # Pillow raises many types for a damaged or foreign file
            raise ExaptError(f"{f}: not a readable image ({str(e).splitlines()[0][:120]})") from None
    mode = "RGB" if "RGB" in modes else "L"
    if size is None:
        first = images[0].size
        for f, im in zip(files, images):
            if im.size != first:
                raise ExaptError(f"{folder}: images differ in size ({files[0].relative_to(folder)} is "
                                 f"{first[0]}x{first[1]}, {f.relative_to(folder)} is {im.size[0]}x{im.size[1]}); "
                                 "give --set data.image_size=N to resize them all to NxN")
    arrays = []
    for im in images:
        im = im.convert(mode)
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        arrays.append(np.asarray(im, dtype=np.uint8))
    x = np.stack(arrays)  # [N, H, W] or [N, H, W, 3]
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x, dtype=np.float32) / np.float32(255)


def resize_images(x: np.ndarray, size: int) -> np.ndarray:
    """[N, C, H, W] -> [N, C, size, size], bilinear with antialiasing (for shrinking)."""
    if x.shape[2:] == (size, size):
        return x
    out = F.interpolate(torch.from_numpy(np.ascontiguousarray(x)), size=(size, size), mode="bilinear",
                        align_corners=False, antialias=True)
    return out.clamp_(0, 1).numpy()


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST / Fashion-MNIST format), gzipped or not, as uint8."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as e:
        raise ExaptError(f"{path}: cannot read ({e}); the file may be damaged") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise ExaptError(f"{path}: not an IDX file of unsigned bytes")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = raw[4 + 4 * ndim:]
    if len(body) != int(np.prod(dims)):
        raise ExaptError(f"{path}: holds {len(body)} bytes of data, its header says {dims}; the file may be damaged")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def pool_like_optdigits(images: np.ndarray, ink: float = 0.1, on: float = 0.5) -> np.ndarray:
    """[N, 1, H, W] in [0, 1] -> [N, 1, 8, 8] in [0, 1], the way UCI optdigits was made.

    optdigits (scikit-learn's `load_digits`) came from NIST bitmaps normalised to 32x32:
    the digit's bounding box scaled to fill the box (aspect kept), then the "on" pixels
    counted in non-overlapping 4x4 blocks (0..16). Here: the box of pixels above `ink`,
    scaled (bilinear) so its longer side is 32 and centred, pixels above `on` are on,
    counts / 16. Simply padding MNIST's 28x28 (whose digits sit in a 20x20 box) to 32x32
    gives thin, small digits that share little with optdigits (a linear model falls to
    ~0.24 there); box-filling is what the NIST normalisation did."""
    from PIL import Image  # heavy: imported on first use

    out = np.zeros((len(images), 1, 8, 8), dtype=np.float32)
    for i, im in enumerate(np.asarray(images)[:, 0]):
        rows, cols = np.flatnonzero(im.max(1) > ink), np.flatnonzero(im.max(0) > ink)
        if not len(rows):
            continue  # a blank image stays blank
        box = im[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        h, w = box.shape
        scale = 32 / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        pil = Image.fromarray(np.round(box * 255).astype(np.uint8)).resize((nw, nh), Image.BILINEAR)
        canvas = np.zeros((32, 32), dtype=np.float32)
        top, left = (32 - nh) // 2, (32 - nw) // 2
        canvas[top:top + nh, left:left + nw] = np.asarray(pil, dtype=np.float32) / 255
        out[i, 0] = (canvas > on).reshape(8, 4, 8, 4).sum((1, 3)) / 16
    return out


def is_image_source(path: Path) -> bool:
    """A .npz file or a folder: the file sources read as images rather than tables."""
    return path.is_dir() or path.suffix.lower() == ".npz"


def read_images(path: Path, label: str | None, size: int | None, require_label: bool
                ) -> tuple[np.ndarray, list[str] | None, list[str] | None]:
    """A .npz file or a folder of images -> (images [N, C, H, W], labels or None, names):
    a folder's names are its files' paths inside it (predictions name the file, not a row
    number); a .npz file's are None."""
    if path.is_dir():
        files, labels = image_folder_files(path, require_label)  # listed once, read in this order
        return _read_image_files(path, files, size), labels, [str(f.relative_to(path)) for f in files]
    x, labels = read_npz(path, label or "y", require_label)
    return (resize_images(x, size) if size else x), labels, None


__all__ = ["IMAGE_EXTENSIONS", "as_images", "check_not_image_less", "image_folder_files", "is_image_source", "pool_like_optdigits",
           "read_idx", "read_image_folder", "read_images", "read_npz", "resize_images"]
