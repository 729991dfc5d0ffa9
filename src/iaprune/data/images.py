"""A folder of images, one subfolder per class, read with Pillow.

Layouts: `ROOT/<class>/<image>` (a test split is carved), or `ROOT/train/<class>/<image>` and
`ROOT/test/<class>/<image>` (the test split is the test folder). Class names are the sorted
names of the training class folders. Images are the files with an image extension directly in a
class folder (other files are ignored); an unreadable or truncated image is an error naming it
(never skipped: a silently smaller dataset hides a broken copy).

Channels: 1 when every image is grayscale (Pillow modes 1, L, LA, I, I;16), else 3 (RGB; alpha
is dropped, palettes are expanded). 16-bit grayscale images stay 16-bit (scaled by 1/65535)
when all images are; otherwise pixels are 8-bit (scaled by 1/255).
Size: `image_size` when given, else the most common size among the images (ties: the larger
area, then the wider); other images are resized to it (bilinear).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iaprune.data.dataset import DatasetError
from iaprune.data.prepare import RawData
from iaprune_runtime.images import channels, check_pixels, draft, pixel_limit, shrink

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N"}
WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}  # 16-bit (or wider) grayscale
SHOWN = 3  # unreadable files named in an error


def class_folders(root: Path) -> list[Path]:
    """The class subfolders of `root`, sorted by name (hidden folders ignored)."""
    return sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: p.name)


def image_files(folder: Path) -> list[Path]:
    """The image files directly in `folder`, sorted by name."""
    return sorted((p for p in folder.iterdir() if p.is_file() and
                   p.suffix.lower() in EXTENSIONS and not p.name.startswith(".")),
                  key=lambda p: p.name)


def layout(root: Path) -> dict[str, list[tuple[str, list[Path]]]]:
    """{'train': [(class, files)], 'test': [...] when the folder has its own test split}."""
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder")
    splits = {"train": root / "train", "test": root / "test"}
    if not all(p.is_dir() for p in splits.values()):
        splits = {"train": root}
    found = {}
    for split, folder in splits.items():
        classes = class_folders(folder)
        if not classes:
            raise DatasetError(f"{folder}: no class folders; put the images in "
                               f"{folder}/<class name>/ (one folder per class)")
        found[split] = []
        for cls in classes:
            files = image_files(cls)
            if not files:
                raise DatasetError(f"{cls}: class folder holds no image "
                                   f"({', '.join(e[1:] for e in EXTENSIONS)})")
            found[split].append((cls.name, files))
    if "test" in found:
        names = {name for name, _ in found["train"]}
        extra = [name for name, _ in found["test"] if name not in names]
        if extra:
            raise DatasetError(f"{splits['test']}/{extra[0]}: class has no folder in "
                               f"{splits['train']}")
    return found


def refuse_unreadable(bad: list[tuple[Path, Exception]]) -> None:
    """One error naming the first few unreadable files and counting the rest."""
    if bad:
        more = f" (and {len(bad) - SHOWN} more)" if len(bad) > SHOWN else ""
        names = "; ".join(f"{p}: {e}" for p, e in bad[:SHOWN])
        raise DatasetError(f"{len(bad)} unreadable image file{'s' * (len(bad) > 1)}: "
                           f"{names}{more}")


def headers(paths: list[Path]) -> list[tuple[str, tuple[int, int]]]:
    """(mode, (width, height)) of each image, read from its header only; an image above the
    pixel limit ($IAPRUNE_MAX_PIXELS, default 16.8 M) is refused before anything is decoded."""
    from PIL import Image, UnidentifiedImageError

    found, bad = [], []
    for path in paths:
        try:
            with Image.open(path) as image:
                found.append((image.mode, image.size))
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
            bad.append((path, exc))
    refuse_unreadable(bad)
    try:
        limit = pixel_limit()
        for path, (_, size) in zip(paths, found, strict=True):
            check_pixels(path, size, limit)
    except ValueError as exc:
        raise DatasetError(str(exc)) from None
    return found


def common_size(sizes: list[tuple[int, int]]) -> tuple[int, int]:
    """(width, height) of most images; ties go to the larger area, then the wider."""
    counts = Counter(sizes)
    return max(counts, key=lambda s: (counts[s], s[0] * s[1], s[0]))


def pixels(path: Path, gray: bool, wide: bool, size: tuple[int, int]) -> np.ndarray:
    """(C, H, W) array of one image (width, height `size`): uint16 when `wide`, else uint8. An
    image many times larger is decoded reduced (JPEG) or box-averaged first (runtime.images)."""
    from PIL import Image

    with Image.open(path) as image:
        draft(image, size[::-1])
        image.load()  # decodes now: a truncated file fails here
        image = shrink(image, size[::-1])
        if wide:
            arr = np.asarray(image).astype(np.int64).clip(0, 65535).astype(np.uint16)
            if image.size != size:  # resized in float, rounded back to 16 bits
                resized = Image.fromarray(arr.astype(np.float32)).resize(
                    size, Image.Resampling.BILINEAR)
                arr = np.clip(np.round(np.asarray(resized)), 0, 65535).astype(np.uint16)
            return arr[None]
        return channels(image, gray, size)  # as the deploy runtime reads an RGB image


def parse_size(image_size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    """(width, height) from N (square) or (height, width); None stays None."""
    if image_size is None:
        return None
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1
                             for n in size):
        raise DatasetError(f"image size must be a positive integer (or height, width), got "
                           f"{image_size!r}")
    return size[1], size[0]


@dataclass(frozen=True)
class Scan:
    """What an image folder holds, found from the image headers alone (nothing decoded)."""

    files: dict[str, list[tuple[str, Path]]]  # split -> [(class name, file)]
    gray: bool  # every image is grayscale: 1 channel, else 3 (RGB)
    wide: bool  # every image is 16-bit grayscale: uint16 samples, else uint8
    size: tuple[int, int]  # (width, height) every image is resized to

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one decoded image."""
        return (1 if self.gray else 3, self.size[1], self.size[0])

    @property
    def dtype(self) -> np.dtype:
        """The raw samples' dtype."""
        return np.dtype(np.uint16 if self.wide else np.uint8)


def scan_folder(root: Path, image_size: int | tuple[int, int] | None = None) -> Scan:
    """The layout, channels, depth and size of an image folder, read from headers only."""
    found = layout(root)
    files = {split: [(name, path) for name, paths in classes for path in paths]
             for split, classes in found.items()}
    modes, sizes = zip(*headers([path for split in files.values() for _, path in split]),
                       strict=True)
    wide = [mode in WIDE_MODES for mode in modes]
    if any(wide) and not all(wide):
        raise DatasetError(f"{root}: mixes 16-bit and 8-bit images; convert them to one depth")
    size = parse_size(image_size) or common_size(list(sizes))
    return Scan(files, all(mode in GRAY_MODES for mode in modes), all(wide), size)


def decode(scan: Scan, path: Path) -> np.ndarray:
    """(C, H, W) raw samples of one image of a scanned folder; a DatasetError naming it when it
    cannot be decoded."""
    try:
        return pixels(path, scan.gray, scan.wide, scan.size)
    except (OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"unreadable image file: {path}: {exc}") from None


def read_folder(root: Path, image_size: int | tuple[int, int] | None = None) -> RawData:
    """Raw uint8/uint16 samples (n, C, H, W) and class-name labels of an image folder."""
    return decode_folder(scan_folder(root, image_size))


def decode_folder(scan: Scan) -> RawData:
    """Every image of a scanned folder decoded: raw samples (n, C, H, W) and class names."""
    arrays, bad = {split: ([], []) for split in scan.files}, []
    for split, files in scan.files.items():
        for name, path in files:
            try:
                arrays[split][0].append(pixels(path, scan.gray, scan.wide, scan.size))
                arrays[split][1].append(name)
            except (OSError, SyntaxError, ValueError) as exc:
                bad.append((path, exc))
    refuse_unreadable(bad)
    (x, y), (x_test, y_test) = arrays["train"], arrays.get("test", (None, None))
    return RawData(np.stack(x), np.array(y), None if x_test is None else np.stack(x_test),
                   None if y_test is None else np.array(y_test))
