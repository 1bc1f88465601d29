"""Reading images and masks robustly, and listing image folders.

Every reader returns plain numpy arrays:

- ``read_image`` -> ``uint8`` ``[H, W, 3]`` RGB, whatever the file holds:
  grayscale is replicated to three channels; RGBA / gray+alpha is composited onto black
  (``rgb * alpha``); palette images are expanded through their palette; 16-bit (and other
  integer) images are scaled by the maximum of their dtype (``65535 -> 255``), so a 12-bit
  camera image stored in a 16-bit PNG comes out darker than its sensor range; float images
  are taken to be in [0, 1] and clipped.
- ``read_mask`` -> ``bool`` ``[H, W]``, nonzero = defect (in a palette image, a nonzero palette index).

Decoding uses ``cv2.imdecode(np.fromfile(path), cv2.IMREAD_UNCHANGED)`` (works with non-ASCII
paths on every OS) and falls back to Pillow for what OpenCV cannot decode. EXIF orientation is
not applied (pixels come out as stored, like camera frames do), except in TIFF files, whose
orientation tag OpenCV's decoder applies. A PGM/PPM is scaled by the maximum its header gives (a
12-bit camera's 4095). ICC colour profiles are not applied. A file whose header declares more than
twice Pillow's ``MAX_IMAGE_PIXELS`` (179 megapixels by default) is refused before it is decoded: from
the header Pillow parses or, in a format only OpenCV reads, by OpenCV's limit, which importing edgecmg
sets to the same (``edgecmg.pixel_limit``; unless it is set already, or cv2 was imported first). Files that are not regular files (FIFOs, devices) are refused unopened. Any failure
raises :class:`~edgecmg.errors.DataError` naming the file; ``load_images`` turns those into skips.
"""
from __future__ import annotations

import errno
import glob
import io
import logging
import math
import os
import re
import stat
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import cv2
import numpy as np

from edgecmg.errors import ConfigError, DataError, MissingFileError, name_some
from edgecmg.magic import GIT_LFS_POINTER, git_lfs_pointer
from edgecmg.pixel_limit import OPENCV_PIXEL_LIMIT_VARIABLE, OPENCV_PIXELS

__all__ = ["IMAGE_EXTENSIONS", "is_glob_pattern", "is_image_file", "read_image", "read_image_size", "read_mask",
           "resize_to_input", "list_images", "load_images", "subfolders_with_images", "to_rgb_uint8",
           "unique_files", "list_images_naming_subfolders", "warn_subfolders_not_read"]

_log = logging.getLogger("edgecmg")

#: Lower-case file suffixes treated as images by :func:`list_images`.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm", ".pbm",
     ".gif", ".jp2"}
)

PathLike = Union[str, Path]
_LOSSY_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif"})  # masks saved so are thresholded, not "nonzero"
_GLOB_CHARS = set("*?[")


# --------------------------------------------------------------------------------------------
# arrays
# --------------------------------------------------------------------------------------------
def to_rgb_uint8(image: Any, *, bgr: bool = False, copy: bool = False) -> np.ndarray:
    """Normalise one frame to contiguous ``uint8`` ``[H, W, 3]`` RGB.

    Accepted: ``[H, W]`` / ``[H, W, 1]`` gray (replicated), ``[H, W, 3]`` colour, ``[H, W, 4]``
    colour + alpha and ``[H, W, 2]`` gray + alpha (an alpha that varies is composited onto black,
    one that is the same everywhere, opaque or a BGRx camera format's padding byte, is dropped:
    :func:`read_image` applies the same rule, so a frame judges as its file would). Dtypes:
    ``uint8``; ``uint16`` scaled ``65535 -> 255``; ``bool``; other integers that hold 0..255;
    floats in [0, 1]; big-endian ones as their dtype. A Pillow image is converted by its mode, as its
    file is read (mode ``I``, how Pillow opens 16-bit PGMs, as 16-bit data).

    Args:
        bgr: the channels are in OpenCV's BGR(A) order and are swapped to RGB.
        copy: always return a new array, even when no conversion was needed (sources set it so
            a producer that reuses one buffer cannot overwrite frames still queued).

    Raises:
        DataError: the array is not an image (wrong shape, empty, non-numeric, out-of-range).
        ConfigError: ``bgr`` is not a bool (``bgr="rgb"`` would be taken as True).
    """
    if not isinstance(bgr, (bool, np.bool_)):
        raise ConfigError(f"bgr={bgr!r}: give True for OpenCV's BGR order (cv2.imread, VideoCapture.read) or False "
                          "for RGB")
    pil = is_pil_image(image)
    if is_tensor(image):
        image = _tensor_as_array(image)
    elif pil:
        # A palette image's array holds indices and a CMYK one's four bytes are no RGBA: convert by mode,
        # as read_image does for files.
        image = _pil_in_array_modes(image)
        if image.mode == "I":
            image = _pil_int32_as_read(np.asarray(image))
    arr = np.asarray(image)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise DataError(f"a frame must be a numeric array, got dtype {arr.dtype} ({type(image).__name__})")
    if np.iscomplexobj(arr):  # numpy would drop the imaginary part with only a warning
        raise DataError(f"a frame must hold real numbers, got dtype {arr.dtype}; pass np.abs(x) or x.real")
    if not arr.dtype.isnative:
        # Big-endian data (Pillow's I;16B, a raw sensor dump read as '>u2') is its dtype all the same; the
        # checks below compare dtypes, which tell '>u2' from uint16.
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (2, 3, 4))):
        channels_first = arr.ndim == 3 and arr.shape[0] in (1, 3, 4)  # PyTorch's C x H x W
        batch = arr.ndim == 4 and (arr.shape[3] in (1, 2, 3, 4) or arr.shape[1] in (1, 3, 4))
        raise DataError(
            f"a frame of shape {arr.shape} is not an image: expected HxW (gray), HxWx3 (RGB), HxWx4 (RGBA) or "
            "HxWx2 (gray + alpha)" + ("; it looks channels-first (CxHxW): pass x.permute(1, 2, 0) (torch) or "
                                      "x.transpose(1, 2, 0) (numpy)" if channels_first else "")
            + (f"; it looks like a batch of {arr.shape[0]} frame(s): pass one (x[0]), or all of them to "
               "predict_batch" if batch else "")
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"a frame of shape {arr.shape} has no pixels")
    if arr.ndim == 3 and arr.shape[2] == 2 and arr.dtype == np.uint8 and not pil and not _said["two_channel"]:
        _note_two_channels(arr)

    if arr.dtype == np.uint16:
        if not (_said["eight_bits_in_sixteen"] and _said["low_bit_camera"]):
            _note_low_bit_depth(arr)
        # Rounded integer rescale; exact at both ends (0 -> 0, 65535 -> 255).
        arr = _by_rows(arr, lambda rows: ((rows.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8))
    elif arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * np.uint8(255)
    elif np.issubdtype(arr.dtype, np.floating):
        lo, hi = float(np.min(arr)), float(np.max(arr))
        if not (math.isfinite(lo) and math.isfinite(hi)):  # min and max are NaN for one NaN pixel: count them
            bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
            raise DataError(f"a float frame must hold finite values in [0, 1], got {bad:,} NaN or infinite "
                            f"value(s) among its {arr.size:,}; replace them (np.nan_to_num) or skip the frame")
        # Arithmetic leaves [0, 1] by a rounding error (1.0000001 after a normalisation): that much is
        # clipped, anything more is a frame in another range.
        if lo < -FLOAT_SLACK or hi > 1.0 + FLOAT_SLACK:
            raise DataError(
                f"a float frame must hold finite values in [0, 1], got [{lo:g}, {hi:g}]; "
                "divide by 255 or convert it to uint8 first"
            )
        if lo < 0.0 or hi > 1.0:
            arr = _by_rows(arr, lambda rows: np.clip(rows, 0.0, 1.0))
        arr = _by_rows(arr, lambda rows: np.rint(rows * 255.0).astype(np.uint8))
    elif arr.dtype != np.uint8:  # other integer types (int32 from some SDKs, int64 from np.arange, ...)
        lo, hi = int(np.min(arr)), int(np.max(arr))
        if lo < 0 or hi > 255:
            raise DataError(
                f"an integer frame of dtype {arr.dtype} holds [{lo}, {hi}]; expected 0..255 (or pass uint16 "
                "for 16-bit images)"
            )
        arr = arr.astype(np.uint8)

    if arr.ndim == 3 and arr.shape[2] in (2, 4) and _alpha_varies(arr[:, :, -1]):
        arr = _by_rows(arr, lambda rows: np.rint(rows[:, :, :-1].astype(np.float32)
                                                 * (rows[:, :, -1:].astype(np.float32) / 255.0)).astype(np.uint8))
    if arr.ndim == 3 and arr.shape[2] <= 2:  # gray (+ an alpha that is the same everywhere, dropped)
        arr = np.ascontiguousarray(arr[:, :, 0])

    # Channel conversions through OpenCV: numpy's strided channel flip (arr[:, :, ::-1]) costs
    # 4.9 ms on a 1280x720 frame against 0.13 ms here, which a 30 fps stream cannot afford.
    if arr.ndim == 2:
        out = cv2.cvtColor(arr, cv2.COLOR_GRAY2RGB)
    elif arr.shape[2] == 4:  # an alpha the same everywhere, dropped
        out = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGB if bgr else cv2.COLOR_RGBA2RGB)
    elif bgr:
        # In place where arr is a conversion of ours (not the caller's frame): one frame-sized copy fewer.
        own = arr.flags.c_contiguous and arr.flags.writeable and not np.may_share_memory(arr, image)
        out = _bgr_to_rgb_in_place(arr) if own else cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    else:
        out = np.ascontiguousarray(arr)
    if copy and np.may_share_memory(out, image):
        out = out.copy()
    return out


def is_tensor(value: Any) -> bool:
    """A torch tensor, recognised without importing torch (duck-typed)."""
    return hasattr(value, "detach") and hasattr(value, "cpu")


def channels_first_batch(shape: Sequence[int]) -> bool:
    """Whether an array or tensor of ``shape`` looks like PyTorch's N x C x H x W batch: iterated, its
    frames would each be refused (or, 3-D, judged as gray frames), so predict_batch and stream say it
    once, for the whole batch."""
    return len(shape) == 4 and shape[1] in (1, 3, 4) and shape[-1] not in (1, 2, 3, 4)


def is_pil_image(value: Any) -> bool:
    """A Pillow image, recognised without importing Pillow (the import costs a stream nothing then)."""
    return type(value).__module__.startswith("PIL.") and hasattr(value, "mode") and hasattr(value, "convert")


def _pil_in_array_modes(im: Any) -> Any:
    """A Pillow image in a mode whose array is pixels as to_rgb_uint8 reads them (L, LA, RGB, RGBA,
    16- and 32-bit gray): palette images through their palette, bilevel as L, CMYK / YCbCr / LAB /
    HSV as RGB."""
    mode = im.mode
    if mode == "P":
        return im.convert("RGBA" if "transparency" in im.info else "RGB")
    if mode == "PA":
        return im.convert("RGBA")
    if mode == "1":
        return im.convert("L")
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return im.convert("RGB")
    return im


def _pil_int32_as_read(arr: np.ndarray) -> np.ndarray:
    """The int32 array of a Pillow mode "I" image, as read_image reads the file it came from. Pillow
    opens 16-bit PGM / PPM files (and, in some versions, 16-bit PNG and TIFF files) in mode I, which OpenCV
    decodes as uint16: values in 0..65535 are 16-bit data (scaled 65535 -> 255 even where all are <= 255,
    as the file is), wider ones are scaled by int32's maximum, negatives clipped (read_image's _unit_top)."""
    if not arr.size or (int(arr.min()) >= 0 and int(arr.max()) <= 65535):
        return arr.astype(np.uint16)  # (an empty one is refused below, as any other)
    top = _unit_top(arr)
    return _by_rows(arr, lambda rows: _unit_to_rgb8(rows, top))


def _tensor_as_array(tensor: Any) -> np.ndarray:
    """A torch tensor as a numpy array: one that requires grad or lives on a GPU is read as any other,
    bfloat16 (what autocast gives) as float32; what numpy cannot hold (a meta tensor) is a DataError."""
    try:
        tensor = tensor.detach().cpu()
        if str(tensor.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            tensor = tensor.float()
        return tensor.resolve_conj().resolve_neg().numpy()
    except (TypeError, RuntimeError, NotImplementedError) as exc:
        raise DataError(f"a {tensor.dtype} tensor on {tensor.device} cannot be read as a frame ({exc}); pass a "
                        "CPU tensor or numpy array of real numbers") from None


FLOAT_SLACK = 1e-3  # how far outside [0, 1] a float frame may stray by rounding (clipped, not refused)
# Notes given once per process, not once per frame; each mistake has its own, so that one said does
# not silence another (an 8-bit cast and a 12-bit camera can both happen in one program).
_said = {"eight_bits_in_sixteen": False, "low_bit_camera": False, "two_channel": False, "low_bit_file": False,
         "float_range_file": False}


def _note_low_bit_depth(arr: np.ndarray) -> None:
    """Say (once) when 16-bit data holds only 12 bits' worth: industrial cameras deliver Mono12 or
    Mono10 in uint16, which the 65535 -> 255 scale turns nearly black; up to 255, the likelier cause is
    an 8-bit image cast to uint16 (``frame.astype(np.uint16)``), which that scale turns black."""
    top = int(arr.max())
    if 0 < top <= 255:
        if _said["eight_bits_in_sixteen"]:
            return
        _said["eight_bits_in_sixteen"] = True
        _log.warning("a 16-bit frame holds values up to %d only: they look 8-bit (an 8-bit image cast to uint16?), "
                     "and 16-bit data is scaled 65535 -> 255, so it comes out nearly black and scores differently; "
                     "if they are 8-bit, pass frame.astype(np.uint8). Said once.", top)
    elif 0 < top < 4096:
        if _said["low_bit_camera"]:
            return
        _said["low_bit_camera"] = True
        _log.warning("a 16-bit frame holds values up to %d only: 16-bit data is scaled 65535 -> 255, so a 10- or "
                     "12-bit camera's frames come out dark and score differently; shift them to 16 bits first "
                     "(frame << 4 for 12-bit data, << 6 for 10-bit). Said once.", top)


def _note_low_bit_file(arr: np.ndarray, path: Path) -> None:
    """Say (once) when a 16-bit image file holds 12 bits' worth or less (a 10- or 12-bit camera's
    frames saved as 16-bit TIFF or PNG): read 65535 -> 255 they come out dark, so a model fitted on
    8-bit images (or on frames shifted to 16 bits) flags every one of them."""
    if _said["low_bit_file"] or arr.dtype != np.uint16 or not arr.size:
        return
    top = int(arr.max())
    if 0 < top < 4096:
        _said["low_bit_file"] = True
        _log.warning("%s is a 16-bit image with values up to %d only (10- or 12-bit data?): 16-bit files are read "
                     "65535 -> 255, so it comes out dark; judge such files with a model fitted on files saved the "
                     "same way, or save them shifted to 16 bits (<< 4 for 12-bit data, << 6 for 10-bit). Said once.",
                     path, top)


def _note_float_range_file(arr: np.ndarray, path: Path) -> None:
    """Say (once) when a floating-point image file holds values outside [0, 1] or not finite (a float
    TIFF of raw counts, a Radiance HDR): read as 0..1 and clipped, it comes out washed out, where the
    same array passed in is refused (to_rgb_uint8)."""
    if _said["float_range_file"] or not np.issubdtype(arr.dtype, np.floating) or not arr.size:
        return
    finite = np.isfinite(arr)
    low = float(np.min(arr, initial=0.0, where=finite))
    high = float(np.max(arr, initial=0.0, where=finite))
    if finite.all() and low >= -FLOAT_SLACK and high <= 1 + FLOAT_SLACK:
        return
    _said["float_range_file"] = True
    _log.warning("%s holds floating-point values from %.4g to %.4g%s: float images are read as 0..1 and clipped, so "
                 "it comes out washed out; save it as 8- or 16-bit, or scaled to [0, 1]. Said once.", path, low, high,
                 "" if finite.all() else " and values that are not numbers (read as 0)")


def _note_two_channels(arr: np.ndarray) -> None:
    """Say (once) that an HxWx2 uint8 array is read as gray + alpha: a camera's packed YUYV (YUY2)
    buffer, what V4L2 delivers with CAP_PROP_CONVERT_RGB off, has this shape too, and read so it
    judges its luma masked by its chroma."""
    _said["two_channel"] = True
    _log.warning("a %dx%dx2 uint8 frame is read as gray + alpha; if it is a packed YUYV (YUY2) camera buffer, "
                 "convert it first: cv2.cvtColor(frame, cv2.COLOR_YUV2RGB_YUY2). Said once.",
                 arr.shape[0], arr.shape[1])


#: Pixels per band of :func:`_by_rows`: big enough to keep numpy's per-call cost negligible, small
#: enough that the temporaries (up to 16 bytes a pixel) stay a few tens of megabytes.
_BAND_PIXELS = 1 << 20


def _row_bands(arr: np.ndarray) -> list[slice]:
    """``arr``'s rows as consecutive bands of about _BAND_PIXELS pixels each."""
    rows = max(1, _BAND_PIXELS // max(1, arr.shape[1]))
    return [slice(start, start + rows) for start in range(0, arr.shape[0], rows)]


def _by_rows(arr: np.ndarray, convert: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``convert(arr)`` for a per-pixel ``convert``, applied to bands of rows: the same pixels without
    its whole-frame temporaries (16-bit or RGBA frames took 24-42 bytes a pixel: 6 GB at 144 megapixels)."""
    out: Optional[np.ndarray] = None
    for band in _row_bands(arr):
        part = convert(arr[band])
        if out is None:
            out = np.empty((arr.shape[0], *part.shape[1:]), part.dtype)
        out[band] = part
    assert out is not None  # images have rows (checked by the callers)
    return out


def _bgr_to_rgb_in_place(arr: np.ndarray) -> np.ndarray:
    """Swap a contiguous uint8 HxWx3 array's first and third channels in place, band by band: given
    the whole frame as src and dst, cv2.cvtColor first copies all of it."""
    for band in _row_bands(arr):
        view = arr[band]
        cv2.cvtColor(view, cv2.COLOR_BGR2RGB, dst=view)
    return arr


def _alpha_varies(alpha: np.ndarray) -> bool:
    """Whether an alpha channel is composited (it varies) or dropped (the same everywhere: opaque,
    or the padding byte of a BGRx / RGBx camera format, often 0, which would turn the frame black)."""
    return bool(alpha.min() != alpha.max())


# --------------------------------------------------------------------------------------------
# decoding
# --------------------------------------------------------------------------------------------
def _read_bytes(path: Path) -> np.ndarray:
    if not path.exists():
        if path.is_symlink():
            if _is_link_loop(path):
                raise DataError(f"{path} is a symbolic link that leads back to itself (a loop through "
                                f"{os.readlink(path)}); fix or remove the link")
            raise MissingFileError(f"{path} is a symbolic link to {os.readlink(path)}, which does not exist; "
                            "fix or remove the link")
        raise MissingFileError(f"image file not found: {path}; check the path (and the working directory)")
    if path.is_dir():
        raise DataError(f"{path} is a folder, not an image file; pass a file, or use list_images() for folders")
    if not path.is_file():  # never opened: a FIFO waits for a writer, /dev/zero never ends
        raise DataError(_not_a_regular_file(path))
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM):
            raise  # the process's trouble, not this file's: skipped as unreadable, every image would be
        raise DataError(f"cannot read image file {path}: {exc}; check its permissions") from exc
    if data.size == 0:
        raise DataError(f"image file {path} is empty (0 bytes); re-export or remove it")
    return data


def kind_of_non_file(path: Path) -> str:
    """What ``path``, which is there (or a link) but no regular file, is instead: "a folder", "a FIFO",
    "a character device", ..., "a link to nothing", or "a link to /dev/zero, a character device"."""
    if path.is_symlink() and not path.exists():
        return "a link to nothing"
    try:
        mode = path.stat().st_mode
    except OSError:
        mode = 0
    kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
            else "a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "not a file or folder")
    if path.is_symlink():
        kind = f"a link to {os.readlink(path)}, {kind}"
    return kind


def _not_a_regular_file(path: Path) -> str:
    """Why ``path``, which exists but is neither a regular file nor a folder (a FIFO, a device, a socket,
    or a link to one), is not read as an image: opening a FIFO blocks until something writes to it, and
    reading a device such as /dev/zero never ends."""
    return f"{path} is not a regular file ({kind_of_non_file(path)}); give image files or their folder"


def _is_link_loop(path: Path) -> bool:
    try:
        path.resolve(strict=True)
    except RuntimeError:  # a loop, up to Python 3.12
        return True
    except OSError as exc:  # a loop is ELOOP from Python 3.13
        return exc.errno == errno.ELOOP
    return False


#: Pillow's own DecompressionBombWarning, which it prints with a path into its source for every file
#: between MAX_IMAGE_PIXELS and twice that (89 to 179 megapixels by default): edgecmg filters it
#: (:func:`_pillow_image`) and says it in its own words (:func:`_note_large_image`).
_PILLOW_BOMB_WARNING = r"Image size \(\d+ pixels\) exceeds limit of \d+ pixels"


def _pillow_image() -> Any:
    """``PIL.Image``, with a filter on Pillow's DecompressionBombWarning (only that warning, only from
    ``PIL.Image``) in place. A filter rather than ``warnings.catch_warnings`` around each open, which is
    not thread-safe (fit decodes on threads): it is added once, and again if something put the filters
    back (``catch_warnings`` elsewhere). Added at the end of the filter list: a filter the host program
    set for this warning (``"error"``, as a hardened service sets it) comes first and still applies;
    without one, the warning stays off in this process, for Pillow's other callers too. The refusal past
    twice the limit is untouched."""
    from PIL import Image

    if not any(category is Image.DecompressionBombWarning and message is not None
               and message.pattern == _PILLOW_BOMB_WARNING for _, message, category, _, _ in warnings.filters):
        warnings.filterwarnings("ignore", message=_PILLOW_BOMB_WARNING, category=Image.DecompressionBombWarning,
                                module=r"PIL\.Image", append=True)
    return Image


_large_said: set[str] = set()  # the files _note_large_image named (once each: a looped stream reads them again)


def _note_large_image(path: Path, pixels: int, size: Optional[tuple[int, int]], limit: int) -> None:
    """Say, once per file, that ``path`` holds more pixels than Pillow's decompression-bomb warning
    limit (``limit``) and is read in full all the same: its megapixels and what that costs."""
    if str(path) in _large_said:
        return
    _large_said.add(str(path))
    shape = f" (width {size[0]}, height {size[1]})" if size else ""
    # About 8 bytes a pixel: predict peaked at 1,589 MB on a 144-megapixel JPEG, 823 MB at 64 (from 370 MB).
    _log.warning("%s is a %s-megapixel image%s: it is read in full, and takes about %.2g GB of memory to judge; "
                 "images over %s megapixels are refused (Pillow's decompression-bomb limit). Downscale it first if "
                 "that is more than this machine can spare", path, _megapixels(pixels), shape, 8 * pixels / 1e9,
                 _megapixels(2 * limit))


def _megapixels(pixels: int) -> str:
    """``pixels`` in megapixels for a message: 169, 89.5 -> 90, 0.62 (below 10: two digits)."""
    value = pixels / 1e6
    return f"{value:,.0f}" if value >= 10 else f"{value:.2g}"


def _check_pixel_count(path: Path, data: np.ndarray) -> bool:
    """Refuse a file whose header declares more pixels than Pillow's decompression-bomb limit
    (``2 * PIL.Image.MAX_IMAGE_PIXELS``, 179 megapixels by default), before anything decodes it:
    OpenCV, which decodes first, would fill memory with a 30000x30000 picture from a file of a
    few hundred kilobytes. Only the header is parsed; formats Pillow cannot parse are left to the
    decoders. Between the limit and twice it (89 to 179 megapixels), where Pillow only warns, the
    image is read and :func:`_note_large_image` names it.

    Returns whether Pillow parsed the header and accepted its size under its limit as it is now (None:
    no limit), which the program may have raised since OpenCV's was set from it: :func:`_decode` then
    reads with Pillow a file OpenCV refuses as too large. False where Pillow could not size it (not its
    format, a damaged header) and where a warnings filter ahead of ours made Pillow's warning an error
    (Pillow would raise it again while decoding)."""
    Image = _pillow_image()
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
    except Image.DecompressionBombError as exc:
        raise DataError(
            f"image {path} is too large to decode ({str(exc).rstrip('.')}): a damaged header, or a picture that "
            "would take gigabytes of memory; downscale it or cut it into tiles first and judge those (from Python, "
            "raising PIL.Image.MAX_IMAGE_PIXELS lets a real picture this large through)") from exc
    except Image.DecompressionBombWarning as exc:  # a filter put ahead of ours turned it into an error
        counted = re.match(r"Image size \((\d+) pixels\)", str(exc))
        if counted and limit:
            _note_large_image(path, int(counted.group(1)), None, limit)
        return False
    except Exception:  # noqa: BLE001  (not Pillow's format, or a damaged header: the decoders decide)
        return False
    if limit and width * height > limit:
        _note_large_image(path, width * height, (width, height), limit)
    return True


def _decode(path: Path) -> tuple[np.ndarray, str]:
    """Decode to a raw array; returns (array, channel order "bgr" or "rgb")."""
    data = _read_bytes(path)
    pillow_accepts = _check_pixel_count(path, data)
    _check_radiance_size(path, data)
    arr = None
    try:
        arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        # Its header's size is over OpenCV's limits, set at import from Pillow's limit as it was then. A file
        # Pillow sized and accepted under its limit as it is now (the program raised PIL.Image.MAX_IMAGE_PIXELS,
        # as the refusal in _check_pixel_count says to) is Pillow's to decode; one Pillow could not size is
        # refused, OpenCV's limit being the only check it had.
        if "CV_IO_MAX_IMAGE" in str(exc) and not pillow_accepts:
            raise DataError(_opencv_refusal(path, str(exc))) from None
        arr = None
    if arr is not None and arr.size > 0:
        return _to_pnm_range(arr, data), "bgr"
    return _decode_pillow(path, data), "rgb"


_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"mif1", b"msf1", b"heim", b"heis"}


def _to_pnm_range(arr: np.ndarray, data: np.ndarray) -> np.ndarray:
    """``arr`` scaled to its dtype's full range where ``data`` is a PGM/PPM whose header gives another
    maximum (12-bit cameras write 4095): OpenCV returns the raw counts, which a 65535 -> 255 scale made
    nearly black (and a maximum of 100 in 8 bits, 100 -> 255, came out dim), with the range in the header."""
    found = re.match(rb"P[2356]\s+(?:#[^\n]*\s+)*\d+\s+(?:#[^\n]*\s+)*\d+\s+(?:#[^\n]*\s+)*(\d+)\s",
                     data[:1024].tobytes())
    if found is None or not np.issubdtype(arr.dtype, np.unsignedinteger):
        return arr
    top, full = int(found.group(1)), np.iinfo(arr.dtype).max
    if not 0 < top < full or arr.max() > top:  # above the header's maximum: a decoder that scaled already
        return arr
    return np.rint(arr.astype(np.float32) * (full / top)).astype(arr.dtype)


#: OpenCV's own default for OPENCV_IO_MAX_IMAGE_PIXELS, where the environment sets none.
_OPENCV_DEFAULT_PIXELS = 1 << 30


def _check_radiance_size(path: Path, data: np.ndarray) -> None:
    """Refuse a Radiance HDR file whose header declares more pixels than OpenCV decodes, before OpenCV
    sees it: its HDR decoder reads from a file, so imdecode writes the bytes to /tmp/__opencv_temp.* and,
    refusing the size, leaves that copy there (11 MB for a 13400 x 13400 header, every time it is read;
    a looping stream over a folder holding one would fill /tmp). Pillow reads no HDR files."""
    head = data[:4096].tobytes()
    if not head.startswith((b"#?RADIANCE", b"#?RGBE")):
        return
    # The header's lines end at an empty line; the resolution line follows: "-Y 480 +X 640" and the like.
    found = re.search(rb"\n\n[-+][XY] (\d+) [-+][XY] (\d+)\n", head)
    if found is None:
        return  # OpenCV's decoder says what is wrong with it
    limit = int(OPENCV_PIXELS) if OPENCV_PIXELS and OPENCV_PIXELS.isdigit() else _OPENCV_DEFAULT_PIXELS
    if int(found.group(1)) * int(found.group(2)) > limit:
        raise DataError(_opencv_refusal(path, "CV_IO_MAX_IMAGE_PIXELS"))


def _opencv_refusal(path: Path, error: str) -> str:
    """The message for a file OpenCV refused before decoding it, its header declaring more pixels than
    OPENCV_IO_MAX_IMAGE_PIXELS (``error``: OpenCV's, which names the limit broken, not the size): one in a
    format Pillow does not parse (or whose header it could not size), so _check_pixel_count could neither
    refuse it first nor let Pillow decode it instead. Raising PIL.Image.MAX_IMAGE_PIXELS does nothing for
    such a file: only OpenCV's limit, read from the environment once as cv2 loads, lets it through."""
    if "CV_IO_MAX_IMAGE_PIXELS" in error:
        limit = (f"{int(OPENCV_PIXELS):,} pixels" if OPENCV_PIXELS and OPENCV_PIXELS.isdigit()
                 else "OpenCV's limit")
        what = f"its header declares more pixels than OpenCV decodes ({limit}, {OPENCV_PIXEL_LIMIT_VARIABLE})"
    else:  # CV_IO_MAX_IMAGE_WIDTH or _HEIGHT
        what = "its header declares a side longer than OpenCV decodes (OPENCV_IO_MAX_IMAGE_WIDTH / _HEIGHT)"
    return (f"image {path} is too large to decode: {what}: a damaged header, or a picture that would take gigabytes "
            "of memory; downscale it or cut it into tiles first and judge those (a real picture this large is let "
            f"through by setting {OPENCV_PIXEL_LIMIT_VARIABLE} higher in the environment before Python starts: "
            "Pillow does not read this file, so raising PIL.Image.MAX_IMAGE_PIXELS does not)")


def _decode_pillow(path: Path, data: np.ndarray) -> np.ndarray:
    from PIL import UnidentifiedImageError

    Image = _pillow_image()
    try:
        with Image.open(io.BytesIO(data.tobytes())) as im:
            im.load()
            arr = np.array(_pil_in_array_modes(im))
    except UnidentifiedImageError as exc:
        pointer = git_lfs_pointer(path, data[:len(GIT_LFS_POINTER)].tobytes())
        if pointer:  # a dataset kept in Git LFS, cloned without its files: every image is one
            raise DataError(pointer) from exc
        if data[4:8].tobytes() == b"ftyp" and data[8:12].tobytes() in _HEIF_BRANDS:  # sound, not "corrupt"
            raise DataError(f"cannot decode image {path}: HEIC/HEIF (a phone's photo format) is not read here; "
                            "convert it to JPEG or PNG (or set the camera to save JPEG)") from exc  # mif1: AVIF too
        # Pillow's own message only names its in-memory buffer; the path says more.
        raise DataError(
            f"cannot decode image {path}: neither OpenCV nor Pillow recognises its format (corrupt, "
            "truncated or not an image); re-export it or remove it from the folder"
        ) from exc
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(
            f"cannot decode image {path}: the file is corrupt, truncated or not an image ({exc}); "
            "re-export it or remove it from the folder"
        ) from exc
    if arr.size == 0:
        raise DataError(f"image {path} has no pixels; re-export it or remove it")
    return arr


def _unit_top(arr: np.ndarray) -> float:
    """What an integer array is divided by to bring it to [0, 1]: its dtype's maximum."""
    top = float(np.iinfo(arr.dtype).max)
    if arr.dtype in (np.int32, np.uint32, np.int64, np.uint64) and arr.size and arr.max() <= 65535:
        top = 65535.0  # Pillow's "I" mode holds 16-bit data in int32
    return top


def _to_unit_float(arr: np.ndarray, top: Optional[float]) -> np.ndarray:
    """Any numeric array -> float32 in [0, 1]: integers divided by ``top`` (:func:`_unit_top` of the
    whole image, not of a band), floats clipped."""
    if arr.dtype == bool:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        return np.clip(arr.astype(np.float32) / top, 0.0, 1.0)
    return np.clip(np.nan_to_num(arr.astype(np.float32)), 0.0, 1.0)


def _unit_to_rgb8(arr: np.ndarray, top: Optional[float]) -> np.ndarray:
    """Gray, gray + alpha, RGB or RGBA of any numeric dtype -> uint8 three channels (alpha composited
    onto black), in the channel order given."""
    f = _to_unit_float(arr, top)
    if f.ndim == 2:
        f = f[:, :, None]
    elif f.shape[2] == 2:  # gray + alpha
        f = f[:, :, :1] * f[:, :, 1:2]
    elif f.shape[2] == 4:  # colour + alpha, composited onto black
        f = f[:, :, :3] * f[:, :, 3:4]
    f = np.broadcast_to(f, f.shape[:2] + (3,))
    return np.rint(f * 255.0).astype(np.uint8)


def _to_rgb8(arr: np.ndarray, order: str, path: Path) -> np.ndarray:
    """The decoder's array (``arr``, ours to overwrite) -> uint8 RGB, with no frame-sized copy beyond
    the result: at 100 megapixels and more each copy is hundreds of megabytes."""
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (2, 3, 4)):
        raise DataError(f"image {path} has unsupported shape {arr.shape}; save it as gray, RGB or RGBA")
    _note_low_bit_file(arr, path)
    _note_float_range_file(arr, path)

    if arr.ndim == 3 and arr.shape[2] in (2, 4) and not _alpha_varies(arr[:, :, -1]):
        if arr.dtype == np.uint8 and arr.shape[2] == 4:  # one conversion, not a copy of the view and another
            return cv2.cvtColor(arr, cv2.COLOR_BGRA2RGB if order == "bgr" else cv2.COLOR_RGBA2RGB)
        arr = arr[:, :, :-1] if arr.shape[2] == 4 else arr[:, :, 0]  # the same everywhere: dropped
    if arr.dtype == np.uint8 and arr.ndim == 2:
        return cv2.cvtColor(arr, cv2.COLOR_GRAY2RGB)  # equal channels: no swap
    if arr.dtype == np.uint8 and arr.shape[2] == 3:
        rgb = arr
    else:
        top = _unit_top(arr) if np.issubdtype(arr.dtype, np.integer) else None  # of the whole image
        rgb = _by_rows(arr, lambda rows: _unit_to_rgb8(rows, top))
    if order == "bgr":
        # In place (the array is ours), and far faster than a numpy [..., ::-1] copy.
        return _bgr_to_rgb_in_place(rgb) if rgb.flags.c_contiguous else cv2.cvtColor(rgb, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(rgb)


def read_image(path: PathLike) -> np.ndarray:
    """Read an image file as ``uint8`` ``[H, W, 3]`` RGB (see the module docstring for conversions);
    a leading ``~`` is the home folder (as in :func:`list_images`, ``Detector.load`` and ``stream()``).

    Raises:
        DataError: the file is missing, a folder, empty, unreadable, corrupt or of an
            unsupported layout; the message names the file.
    """
    if not isinstance(path, (str, os.PathLike)):
        hint = ("; an array is converted with to_rgb_uint8" if hasattr(path, "shape") or is_pil_image(path)
                else "")
        given = (f"{type(path).__name__} of shape {tuple(path.shape)}" if hasattr(path, "shape")
                 else f"{path!r:.60} ({type(path).__name__})")
        raise DataError(f"read_image takes a file path (str or pathlib.Path), got {given}{hint}")
    p = Path(path).expanduser()  # "~/parts/a.png" as Detector.load and stream() take it
    raw, order = _decode(p)
    return _to_rgb8(raw, order, p)


def read_image_size(path: PathLike) -> tuple[int, int]:
    """(height, width) of an image file, from its header where Pillow can read one, without
    decoding the pixels (fit sizes its model on every training image before reading any in full).
    Files Pillow cannot parse are decoded as :func:`read_image` would, so the size, or the error
    naming the file, is the same as reading it. A header can be intact over a truncated body: the
    full read may still fail later.

    Raises:
        DataError: as :func:`read_image`.
    """
    from PIL import Image

    p = Path(path).expanduser()
    if p.is_file():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # only the header is read
                with Image.open(p) as im:
                    width, height = im.size
            if width > 0 and height > 0:
                return int(height), int(width)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            pass  # not Pillow's format, or damaged: the full read decides
    return read_image(p).shape[:2]


def resize_to_input(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 RGB frame of any size -> contiguous uint8 ``[H, W, 3]`` at ``size`` = (H, W).

    The one resize between a picture and the model, used by fit, calibration and every detector,
    so training and inference see the same pixels. INTER_AREA on the host: alias-free, and
    cheaper than resizing inside the graph. A frame at least twice the target size (with even
    sides) is first halved with exact 2x2 averages, which OpenCV does far faster than a general
    area resize: 1280x720 -> 256x256 in 1.4 ms instead of 3.3 ms, 1920x1080 in 1.6 ms instead
    of 7.7 ms (one core), with the same pixels to within rounding.
    """
    h, w = int(size[0]), int(size[1])
    while (frame.shape[0] >= 2 * h and frame.shape[1] >= 2 * w
           and frame.shape[0] % 2 == 0 and frame.shape[1] % 2 == 0):
        frame = cv2.resize(frame, (frame.shape[1] // 2, frame.shape[0] // 2), interpolation=cv2.INTER_AREA)
    if frame.shape[:2] != (h, w):
        frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(frame)


def read_mask(path: PathLike) -> np.ndarray:
    """Read a ground-truth mask as ``bool`` ``[H, W]``; any nonzero colour value is a defect (in a
    JPEG, whose compression blurs edges into small nonzero values: above half its brightest value).

    An alpha channel counts only where the colour is the same everywhere and the alpha is not (a
    paint tool's overlay: one colour, the defect drawn in alpha); then a nonzero alpha is a defect.
    Otherwise only the colour channels count.

    A palette image (PNG, GIF, BMP or TIFF of Pillow's mode ``P`` / ``PA``) is read by its palette
    *index*: index 0 is the background, any other index a defect, whatever colours the palette
    gives them. That is how segmentation tools (Pascal VOC, labelme, CVAT) write class masks, and
    how a paint tool's two-colour mask with palette [white, red] is meant; read by colour, its white
    background would make every pixel a defect. A tool that stored the background at another index
    gives a mask that covers most of its image, which eval names as likely inverted.

    Raises:
        DataError: as :func:`read_image`.
    """
    p = Path(path)
    indices = _palette_indices(p)
    if indices is not None:
        return indices != 0
    raw, _ = _decode(p)
    if raw.ndim == 3:
        if raw.shape[2] in (2, 4):
            colour, alpha = raw[:, :, :-1], raw[:, :, -1]
            # One colour all over: read by colour, a black overlay was an empty mask and a white one all defect.
            raw = alpha if colour.min() == colour.max() and _alpha_varies(alpha) else colour
        if raw.ndim == 3:
            raw = raw.max(axis=2)
    if raw.ndim != 2:
        raise DataError(f"mask {path} has unsupported shape {raw.shape}; save masks as single-channel PNG")
    if p.suffix.lower() in _LOSSY_EXTENSIONS and raw.size:
        # JPEG's ringing puts small nonzero values around every edge (a 0/255 mask's defect area
        # doubled on KolektorSDD masks saved as JPEG): there, a defect is above half the brightest value.
        return raw > raw.max() / 2
    return raw != 0


def image_frame_count(path: PathLike) -> int:
    """How many frames an image file holds (an animated GIF or WebP, a multi-page TIFF: more than 1),
    from its header; 1 where Pillow cannot tell (a format only OpenCV reads, an unreadable file)."""
    if not Path(path).is_file():  # Pillow would open a FIFO named x.gif, and wait on it
        return 1
    Image = _pillow_image()
    try:
        with Image.open(path) as im:
            return max(1, int(getattr(im, "n_frames", 1)))
    except Exception:  # noqa: BLE001 - unreadable here: read_image names it when it is read
        return 1


def _palette_indices(path: Path) -> Optional[np.ndarray]:
    """The palette indices (uint8 ``[H, W]``) of a palette image file, or None for any other file.

    OpenCV expands a palette to its colours, which loses which index is the background: the indices
    are read with Pillow instead. A file Pillow cannot identify (missing, a folder, not an image, a
    decompression bomb) gives None, and :func:`_decode` then reports it by name as for any image.
    """
    if not path.is_file():  # _decode names it; Pillow would open a FIFO, and wait on it
        return None
    Image = _pillow_image()

    try:
        im = Image.open(path)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    with im:
        if im.mode not in ("P", "PA"):
            return None
        try:
            im.load()
            # getchannel: a PA image's array would hold its alpha beside the index
            indices = np.array(im.getchannel("P") if im.mode == "PA" else im)
        except (OSError, ValueError, SyntaxError) as exc:
            raise DataError(f"cannot decode mask {path}: the file is corrupt, truncated or not an image ({exc}); "
                            "re-export it or remove it") from exc
    if indices.size == 0:
        raise DataError(f"mask {path} has no pixels; re-export it or remove it")
    return indices


# --------------------------------------------------------------------------------------------
# listing and batch loading
# --------------------------------------------------------------------------------------------
MASK_NAME_ENDINGS = ("_mask", "_gt", "_label")  # a mask saved beside its image: <name>_GT.png beside <name>.png


def masks_beside_images(paths: Sequence[Path]) -> list[Path]:
    """Those of ``paths`` named as the mask of another of ``paths`` in the same folder (``<name>_mask``,
    ``_GT`` or ``_label`` beside ``<name>``, any case and extension): KolektorSDD 2 and the original
    KolektorSDD keep each mask beside its image, where a folder's listing reads it as an image."""
    stems = {(path.parent, path.stem.lower()) for path in paths}
    return [path for path in paths
            if any(path.stem.lower().endswith(end) and (path.parent, path.stem.lower()[:-len(end)]) in stems
                   for end in MASK_NAME_ENDINGS)]


def is_image_file(p: Path) -> bool:
    """Whether :func:`list_images` lists ``p``: an image suffix, not hidden, a file or a broken link."""
    # Hidden files (e.g. macOS "._name.png" resource forks) are not images even with the suffix.
    # A broken symbolic link is kept, so that reading it reports it by name instead of it vanishing.
    return (p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
            and (p.is_file() or (p.is_symlink() and not p.exists())))


def real_path(path: Path) -> Path:
    """The file ``path`` leads to, through its links, so that one file given by two names is one; a
    broken or looping link is itself (in its folder's real place)."""
    try:
        return path.resolve(strict=True)
    except (OSError, RuntimeError):
        return path.parent.resolve() / path.name


def unique_files(paths: Iterable[Path]) -> list[Path]:
    """``paths`` in order, without the ones that lead to a file listed before (by another name, a link,
    or the same folder given twice); a broken or looping link is kept once, so that reading it names it."""
    seen: set[Path] = set()
    kept = []
    for path in paths:
        real = real_path(path)
        if real not in seen:
            seen.add(real)
            kept.append(path)
    return kept


def _once_each(paths: list[Path]) -> list[Path]:
    """:func:`unique_files` of a pattern's matches, said: a ``**`` pattern follows links to folders, and
    a link to a parent folder listed one image dozens of times (a training set silently weighted
    toward it)."""
    kept = unique_files(paths)
    if len(kept) < len(paths):
        _log.warning("%d path(s) matched by the pattern lead to files already matched (through symbolic links); "
                     "each file is read once", len(paths) - len(kept))
    return kept


def _other_case_hint(pattern: str) -> str:
    """Where ``pattern``'s extension in the other case matches images (``*.jpg`` for VisA's ``.JPG``
    files: glob is case-sensitive here), a hint naming that pattern; else nothing."""
    stem, dot, extension = pattern.rpartition(".")
    if not dot or not extension or any(char in extension for char in "/\\"):
        return ""
    other = f"{stem}.{extension.swapcase()}"
    count = sum(1 for path in glob.glob(other, recursive=True) if is_image_file(Path(path)))
    return f"; {other!r} matches {count} image file(s): patterns are case-sensitive" if count else ""


def is_glob_pattern(text: str) -> bool:
    """Whether ``text`` is a glob pattern (``parts/*.png``) rather than the name of a file or folder
    that holds such characters."""
    return bool(_GLOB_CHARS & set(text)) and not Path(text).exists()


def list_images(folder_or_glob: PathLike) -> list[Path]:
    """Sorted image files of a folder (non-recursive), of a glob pattern, or a single image file.

    Only files whose suffix is in :data:`IMAGE_EXTENSIONS` (case-insensitive) are kept; hidden
    files are ignored. Glob patterns follow :mod:`glob` (``**`` recurses).

    Raises:
        DataError: the folder does not exist, or nothing matched.
    """
    text = os.path.expanduser(str(folder_or_glob))  # glob does not expand "~" itself
    exts = ", ".join(sorted(IMAGE_EXTENSIONS))
    if is_glob_pattern(text):
        found = _once_each(sorted(p for p in map(Path, glob.glob(text, recursive=True)) if is_image_file(p)))
        if not found:
            raise DataError(f"no image files match the pattern {text!r} (image extensions: {exts}); check the pattern"
                            f"{_other_case_hint(text)}")
        return found
    p = Path(text)
    if not p.exists():
        if p.is_symlink() and p.suffix.lower() in IMAGE_EXTENSIONS:
            # A broken link named on its own is an unreadable image, as one in a folder is: read, it is
            # skipped and named with where it points, and the others given beside it are still judged.
            return [p]
        raise MissingFileError(f"no such image file or folder: {p} (not found); check the path")
    if p.is_file():
        if p.suffix.lower() not in IMAGE_EXTENSIONS:
            raise DataError(_not_an_image_file(p, exts))
        return [p]
    if not p.is_dir():  # a FIFO or a device (was "[Errno 20] Not a directory"); reading one would block or never end
        raise DataError(_not_a_regular_file(p))
    # A folder's FIFOs and devices are left out unopened: is_image_file only stats its entries.
    found = sorted(c for c in p.iterdir() if is_image_file(c))
    if not found:
        raise DataError(
            f"no image files in {p} (looked for {exts}, non-recursively); put the images directly in "
            "that folder or pass a glob such as 'folder/**/*.png'"
        )
    return found


def _not_an_image_file(path: Path, exts: str) -> str:
    """Why a file given as an image is not one: a model or calibrate's cache is a file in the wrong
    place (the arguments mixed up), which "rename it" would make worse."""
    from edgecmg.fileio import MODEL_FILE_SUFFIXES, is_range_cache

    if path.suffix.lower() in MODEL_FILE_SUFFIXES:
        return (f"{path} is a model file ({path.suffix}), not an image: give it where the command takes its model "
                "(see its --help), and images or their folder here")
    if is_range_cache(path):
        return (f"{path} is calibrate's activation-range cache, not an image: give the images (or their folder) "
                "it was made from here")
    if path.suffix.lower() in (".heic", ".heif"):
        return f"{path}: HEIC/HEIF (a phone's photo format) is not read here; convert it to JPEG or PNG"
    return f"{path} does not have an image extension ({exts}); rename it or pass its folder"


def subfolder_names(folder: PathLike) -> set[str]:
    """Names of ``folder``'s sub-folders; none where it cannot be listed (missing, unreadable)."""
    try:
        return {sub.name for sub in Path(folder).iterdir() if sub.is_dir()}
    except OSError:  # unreadable, or a folder inside it that may not be entered: nothing to name
        return set()


def subfolders_with_images(folder: PathLike) -> list[str]:
    """Names of ``folder``'s sub-folders (sorted) that hold image files at any depth: what
    :func:`list_images`, which lists a folder non-recursively, leaves unread there (fit and
    calibrate name them rather than drop them unsaid)."""
    def holds_images(sub: Path) -> bool:
        try:
            return any(is_image_file(path) for path in sub.rglob("*"))
        except OSError:  # unreadable: not read either way
            return False

    return [sub.name for sub in sorted(Path(folder).iterdir()) if sub.is_dir() and holds_images(sub)]


def list_images_naming_subfolders(item: PathLike, done: str) -> list[Path]:
    """:func:`list_images` of ``item``; where it is a folder, its sub-folders that hold images (which
    are not read) are named in one warning (:func:`warn_subfolders_not_read`; ``done``: what the
    command does to images, "judged" or "read")."""
    paths = list_images(item)
    if Path(item).is_dir():
        warn_subfolders_not_read(item, done, paths[0].suffix)
    return paths


def warn_subfolders_not_read(folder: PathLike, done: str, suffix: str = ".png") -> list[str]:
    """Name, in one warning, the sub-folders of ``folder`` (given to a command that reads it with
    :func:`list_images`) whose images are left unread, the first three of them, and the quoted glob
    that reads them too; ``done``: what the command does to images ("judged", "read"), ``suffix``: the
    images' (the glob's). Returns the sub-folders' names (empty where there are none)."""
    try:
        nested = subfolders_with_images(folder)
    except OSError:  # the listing already read it; an unreadable folder is said there
        return []
    if nested:
        _log.warning("%s: the images in its sub-folder%s %s are not %s (a folder's own images are, not its "
                     "sub-folders'); to include them, pass a quoted glob such as '%s'", folder,
                     "s" if len(nested) > 1 else "", name_some(nested, 3), done,
                     os.path.join(str(folder), "**", f"*{suffix}"))
    return nested


def warn_unreadable(path: PathLike, reason: str) -> None:
    """The warning for one image skipped as unreadable (load_images, fit)."""
    _log.warning("skipping unreadable image %s: %s", path, reason)


def warn_skipped_count(skipped: int, total: int) -> None:
    """The closing count of images skipped as unreadable, when there were any."""
    if skipped:
        _log.warning("%d of %d image(s) skipped as unreadable", skipped, total)


def load_images(
    paths: Union[PathLike, Iterable[PathLike]],
    *,
    on_error: Optional[Callable[[Path, str], None]] = None,
) -> tuple[list[np.ndarray], list[Path], list[tuple[Path, str]]]:
    """Read many images, skipping the unreadable ones instead of failing.

    Args:
        paths: image paths, or one folder / glob pattern (expanded with :func:`list_images`).
        on_error: optional callback ``(path, reason)`` called for every skipped file, in
            addition to a warning on the ``"edgecmg"`` logger.

    Returns:
        ``(images, ok_paths, skipped)``: RGB ``uint8`` arrays and their paths in input order,
        and ``(path, reason)`` for every file that could not be read.
    """
    if isinstance(paths, (str, Path)):
        paths = list_images(paths)
    images: list[np.ndarray] = []
    ok: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for item in paths:
        p = Path(item)
        try:
            img = read_image(p)
        except DataError as exc:
            reason = str(exc)
            skipped.append((p, reason))
            warn_unreadable(p, reason)
            if on_error is not None:
                on_error(p, reason)
            continue
        images.append(img)
        ok.append(p)
    warn_skipped_count(len(skipped), len(skipped) + len(ok))
    return images, ok, skipped
