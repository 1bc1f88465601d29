"""fit(): good images in, a fitted CMGModel out (no Detector method: a free function by design)."""
from __future__ import annotations

import csv
import hashlib
import logging
import math
import os
import platform
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np
import torch

from edgecmg import __version__
from edgecmg.config import ASPECT_TOLERANCE, TINY_FRAME_FACTOR, ModelConfig, aspect_stretch, expect_config
from edgecmg.datasets import MVTecDataset, Sample
from edgecmg.errors import ConfigError, DataError, name_some
from edgecmg.imageio import (is_glob_pattern, is_image_file, kind_of_non_file, list_images, masks_beside_images,
                             read_image, read_image_size, resize_to_input, subfolder_names, subfolders_with_images,
                             to_rgb_uint8,
                             warn_skipped_count, warn_unreadable)
from edgecmg.model import bank as bank_ops
from edgecmg.model import cmer, cmle, forking
from edgecmg.model.backbone import BACKBONE_ID, MEAN, STD, load_pretrained
from edgecmg.model.detector import CMGModel, Geometry
from edgecmg.model.matcher import build_matcher
from edgecmg.progress import show_progress, tqdm
from edgecmg.thresholds import FEW_THRESHOLD_IMAGES, threshold_from_scores

log = logging.getLogger("edgecmg")

# Share of the training images held out of the bank to set the threshold on unseen normal data.
HOLDOUT_FRACTION = 0.1
# Bank images averaged into the normal level of the maps (evenly spread; more adds time, not accuracy).
NORMAL_LEVEL_IMAGES = 64
MIN_TRAIN_IMAGES = 8
# Names per list in the metadata's "training" section (held out, copies, unreadable): enough to find
# the images of a typical fit, while a fit on tens of thousands keeps a small header (their counts stay whole).
RECORDED_NAMES = 300


def median_aspect(shapes: Sequence[tuple[int, int]]) -> float:
    """The training images' height / width (their median)."""
    return float(np.median([h / w for h, w in shapes]))


def choose_input_size(shapes: Sequence[tuple[int, int]], config: ModelConfig) -> tuple[int, int]:
    """Keep the parts' aspect ratio: area close to max_side**2, both sides multiples of 32."""
    if config.input_size is not None:
        return config.input_size
    aspect = median_aspect(shapes)
    area = config.max_side ** 2
    height = math.sqrt(area * aspect)
    width = height / aspect
    # A long line-scan frame at a large max_side would pass the longest side a model file may have
    # (the loader refuses it): both sides shrink together, the aspect kept.
    shrink = min(1.0, config.MAX_INPUT_SIDE / max(height, width))
    height, width = height * shrink, width * shrink
    return (min(config.MAX_INPUT_SIDE, max(64, int(round(height / 32)) * 32)),
            min(config.MAX_INPUT_SIDE, max(64, int(round(width / 32)) * 32)))


def _warn_odd_aspects(shapes: Sequence[tuple[int, int]], names: Sequence[str], size: tuple[int, int]) -> None:
    """Name the training images whose height / width is off the median by more than ASPECT_TOLERANCE:
    the resize stretches their part against the others' (a rotated or uncropped frame among crops),
    as Detector warns for such frames at run time."""
    aspect = median_aspect(shapes)
    odd = [f"{name} ({h}x{w})" for name, (h, w) in zip(names, shapes)
           if aspect_stretch(h / w, aspect) > ASPECT_TOLERANCE]
    if odd:
        log.warning("%d of %d training image(s) have a height/width over %.2fx off the others' median %.2f, so "
                    "the resize to the model's %dx%d (height x width) stretches their part: %s; crop or rotate them as "
                    "the others are, or leave them out", len(odd), len(shapes), ASPECT_TOLERANCE, aspect,
                    size[0], size[1], name_some(odd, 5))


def _warn_tiny(shapes: Sequence[tuple[int, int]], names: Sequence[str], size: tuple[int, int]) -> None:
    """Name the training images under 1/TINY_FRAME_FACTOR of the model's input on a side, as Detector
    does for such frames: blown up to the input they hold no detail (an empty or misplaced crop, most
    often), yet they go into the memory bank or set the threshold like any other image."""
    tiny = [f"{name} ({h}x{w})" for name, (h, w) in zip(names, shapes)
            if h * TINY_FRAME_FACTOR < size[0] or w * TINY_FRAME_FACTOR < size[1]]
    if tiny:
        log.warning("%d of %d training image(s) are under 1/%d of the model's %dx%d input (height x width) on a side, "
                    "so the resize blows them up more than %dx and they hold no detail of a part: %s; check the crop "
                    "that made them (an empty or misplaced one?), or leave them out", len(tiny), len(shapes),
                    TINY_FRAME_FACTOR, size[0], size[1], TINY_FRAME_FACTOR, name_some(tiny, 5))


def read_captions(folder: Path) -> dict[str, str]:
    """Optional per-image captions from ``captions.csv`` (columns: file,text) beside the images.

    Written by hand, a caption holds unquoted commas: the fields a row has beyond the header's are the
    rest of its caption, joined back into it (``a.png, shiny, no scratches`` captions a.png "shiny, no
    scratches"). Rows without text, captions over several lines (a quote left open takes the rows
    after it) and files named by more than one row (the last is used) are warned about, by line."""
    path = folder / "captions.csv"
    if not path.is_file():
        return {}
    rows = []  # (first line, last line, fields): the warnings name rows by line, as an editor numbers them
    row_end = 0  # the last line of the row read before (csv.Error names the row after it)
    # utf-8-sig: spreadsheets (Excel's "CSV UTF-8") start the file with a byte-order mark, which
    # would otherwise be read as part of the first header name.
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, skipinitialspace=True)  # "a.png, text" as written by hand
            header = next(reader, [])
            row_end = reader.line_num
            for fields in reader:
                if not fields:  # a blank line
                    continue
                # csv skips blank lines unseen: a row's first line is its last less the line breaks it holds,
                # yet not before the line after the previous row (a quote left open to the end holds the last break)
                first = max(row_end + 1, reader.line_num - sum(field.count("\n") for field in fields))
                row_end = reader.line_num
                rows.append((first, row_end, fields))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason}); save it as CSV UTF-8") from None
    except csv.Error as exc:  # a field over csv's size limit, a NUL byte: the row, not a traceback
        raise DataError(f"{path}, the row from line {row_end + 1}: not readable as CSV ({exc}); a caption may hold "
                        f"up to {csv.field_size_limit():,} characters, and a quote left open runs on through the rows "
                        "after it: fix that row") from None
    if not header and not rows:  # an empty file
        return {}
    if not {"file", "text"} <= set(header):
        raise DataError(f"{path} must have the header 'file,text' as its first line; it starts with "
                        f"{','.join(header)!r}")
    twice = [name for name in ("file", "text") if header.count(name) > 1]
    if twice:  # which column holds the captions would be a guess (it was the first, unsaid)
        raise DataError(f"{path}: its header names the column {' and '.join(map(repr, twice))} more than once "
                        f"({','.join(header)!r}); keep one 'file' and one 'text' column")
    file_at, text_at = header.index("file"), header.index("text")
    # Fields beyond the header's can only be the caption's rest when the caption is the last column.
    text_last = text_at == len(header) - 1
    captions: dict[str, str] = {}
    lines_of: dict[str, list[int]] = {}
    unusable, multiline, cut = [], [], []
    for first, last, fields in rows:
        fields = fields + [""] * (len(header) - len(fields))  # a short row: its missing cells are empty
        name, text = caption_key(fields[file_at].strip()), fields[text_at].strip()
        extra = [field for field in fields[len(header):] if field.strip()]  # trailing empty cells say nothing
        if extra and text_last:
            text = ", ".join([text, *extra])  # skipinitialspace took the space after each comma
        elif extra:
            cut.append(f"line {first} ({name or 'no file name'})")
        if not (name and text):  # MiniLM means nothing by '' (and a file name is what matches the caption)
            unusable.append(name or "(no file name)")
            continue
        if last > first:
            multiline.append(f"{name} (lines {first}-{last})")
        captions[name] = text
        lines_of.setdefault(name, []).append(first)
    if unusable:
        log.warning("%s: %d row(s) without a file name or a text left out (their images get pseudo-text): %s",
                    path, len(unusable), name_some(unusable, 5))
    if cut:
        log.warning("%s: %d row(s) have more fields than the header, and the extra ones are left out (only a caption "
                    "in the last column takes them back): %s; quote a caption holding commas (\"a, b\")",
                    path, len(cut), name_some(cut, 5))
    if multiline:
        log.warning("%s: %d caption(s) run over several lines: %s; a quote left open takes the rows after it into "
                    "its caption, and their images lose theirs: close the quote (where the line break is meant, "
                    "nothing is wrong)", path, len(multiline), name_some(multiline, 5))
    repeated = [f"{name} (lines {', '.join(map(str, lines))})" for name, lines in lines_of.items() if len(lines) > 1]
    if repeated:
        log.warning("%s: %d file(s) named by more than one row, and the last row's caption is used: %s; keep one row "
                    "per file", path, len(repeated), name_some(repeated, 5))
    return captions


class _Collected:
    """Per-image quantities gathered in one pass over the training set."""

    def __init__(self) -> None:
        self.patches: Optional[torch.Tensor] = None  # [N, P, C] fp16, filled batch by batch
        self.image_features: list[torch.Tensor] = []
        self.text_space: list[torch.Tensor] = []  # each image as a point of the matcher's text space
        self.gains: list[torch.Tensor] = []


@torch.no_grad()
def _collect(model: CMGModel, frames: list[np.ndarray], batch_size: int, show: bool, *,
             text_space: bool, match_gains: bool) -> _Collected:
    """One pass over the images (uint8 RGB at the model size). Optional parts, each costing matcher
    passes, so only when used:
    ``text_space``: embed each image in the matcher's text space (CMLE's pseudo-text);
    ``match_gains``: score the drop-one-cell variants (CMER's margins)."""
    out = _Collected()
    for start in tqdm(range(0, len(frames), batch_size), desc="features", unit="batch", disable=not show):
        batch = torch.stack([torch.from_numpy(f) for f in frames[start:start + batch_size]])
        featurizer = model.featurizer
        x = featurizer.preprocess(batch)
        backbone_out = featurizer.backbone(x, model.geometry.layout.blocks)
        patches = featurizer.patch_features(backbone_out.features)
        if out.patches is None:  # one block for all images: a list joined later would be held twice
            out.patches = torch.empty((len(frames), *patches.shape[1:]), dtype=torch.float16)
        out.patches[start:start + len(patches)] = patches
        out.image_features.append(patches.mean(dim=1))
        if text_space:
            out.text_space.append(featurizer.matcher.image_embedding(x, backbone_out.head))
        if match_gains:
            scores = featurizer.match_scores(x, backbone_out.head)
            out.gains.append(cmer.match_gain(scores[:, 0], scores[:, 1:]))
    return out


def _require_enough(count: int, source: str, offered: int) -> None:
    """``count`` usable images of the ``offered``: enough to fit? Where files were lost (unreadable,
    copies) that is said, not "add more" alone: nine text files named .png read as "found 0: add more"."""
    if count < MIN_TRAIN_IMAGES:
        lost = f" of the {offered} given" if offered > count else ""
        why = (": the others could not be read or are copies of another (named above); fix or replace them, or"
               if lost else ":")
        raise DataError(f"fit needs at least {MIN_TRAIN_IMAGES} readable, distinct images of good parts, found {count}"
                        f"{lost}{source}{why} add more (a few hundred set a reliable threshold)")


def training_images(data: str | Path) -> list[Path]:
    """The good images of DATA: an MVTec root (its ``train/good``), a folder or a glob pattern. A
    folder is read non-recursively: its sub-folders that hold images are named, not read."""
    root = Path(data).expanduser()
    good = root / "train" / "good"
    if good.is_dir():
        folder = good
    elif root.is_dir():
        folder = root
    else:
        return _leave_out_masks(list_images(data))  # a glob pattern or one image file: what it matches was asked for
    nested = subfolders_with_images(folder)
    if not any(is_image_file(p) for p in folder.iterdir()):
        # In an MVTec layout list_images' hint for a folder without images, a glob over it, would train on
        # test/'s defects (or ground_truth/'s masks): those folders get a refusal of their own.
        if folder == good:
            raise DataError(f"{good} holds no image files to fit on: put the images of good parts in it (fit {root} "
                            "reads that folder alone), or pass a folder of them")
        refusal = _mvtec_refusal(root)
        if refusal:
            raise DataError(refusal)
        if nested:  # a glob over every sub-folder trained VisA's Data/ on its anomalies and masks
            raise DataError(f"{folder} holds no image files of its own, only sub-folders that do "
                            f"({name_some(nested, 5)}): fit reads the folder it is given; pass the one that holds good "
                            f"parts only, or, where every sub-folder holds good parts only (one a day, say), a glob "
                            f"such as '{folder}/**/*.png'")
    images = _leave_out_masks(list_images(folder))
    if nested:  # a folder's own images are read, not its sub-folders': say which images the fit leaves out
        log.warning("%s: the images in its sub-folder(s) %s are not read (fit reads a folder's own images); to train "
                    "on them too, where they are good parts only, pass a glob such as '%s/**/*%s'",
                    folder, name_some(nested, 3), folder, images[0].suffix)
    return images


def _leave_out_masks(images: list[Path]) -> list[Path]:
    """``images`` less the masks saved beside their images (``<name>_GT.png`` beside ``<name>.png``),
    named; and a warning where the rest come from a dataset's defects or masks."""
    beside = masks_beside_images(images)
    if beside:
        log.warning("%d file(s) named as masks of the images beside them are not trained on: %s", len(beside),
                    name_some([str(path) for path in beside], 3))
        images = sorted(set(images) - set(beside))
    unlikely = [path for path in images if _defects_or_masks_folder(path)]
    if unlikely:
        log.warning("%d of the %d training images are in a dataset's folders of defects or masks (the first: %s): fit "
                    "takes every image as a good part, and the defects it learns are then judged normal; fit on the "
                    "good parts alone (an MVTec root's train/good)", len(unlikely), len(images), unlikely[0])
    return images


def _defects_or_masks_folder(path: Path) -> Optional[Path]:
    """The folder near ``path`` that holds defects or masks in a known layout, or None: MVTec's
    test/<defect type>/ (beside test/good) and ground_truth/, VisA's Anomaly/ (beside Normal/) and
    Masks/ (beside Images/)."""
    for level, folder in enumerate(path.parents):
        if level > 2:
            return None
        name, above = folder.name.lower(), folder.parent
        if name == "ground_truth" or (name == "masks" and (above / "Images").is_dir()):
            return folder
        if name == "anomaly" and (above / "Normal").is_dir():
            return folder
        if level == 1 and name == "test" and (folder / "good").is_dir() and path.parent.name != "good":
            return path.parent
    return None


def _folder_captions(images: list[Path], cmle: bool) -> Optional[dict[str, str]]:
    """The captions of ``captions.csv`` beside ``images`` (see :func:`read_captions`), or None where
    there is none to read: CMLE is off, or the images (a glob's) come from several folders."""
    folders = list(dict.fromkeys(path.parent for path in images))
    files = [folder / "captions.csv" for folder in folders if (folder / "captions.csv").is_file()]
    if not files:
        _say_captions_not_a_file(images, cmle)
        return None
    if not cmle:  # captions serve CMLE alone: unread, a damaged file cannot stop a fit that would not use it
        log.info("%s is not read: captions serve CMLE only, which is off", name_some([str(f) for f in files], 3))
        return None
    if len(folders) > 1:
        # A captions.csv names the files of its own folder; read from one folder of several (as the
        # first image's once was), its rows could caption another folder's files of the same name.
        log.warning("%s is not read: the images come from %d folders, and a captions.csv captions its own "
                    "folder's files; fit on one folder, or pass captions={file name: text} to fit() in Python",
                    name_some([str(f) for f in files], 3), len(folders))
        return None
    return read_captions(folders[0])


def _say_captions_not_a_file(images: list[Path], cmle: bool) -> None:
    """Warn where the one folder ``images`` come from holds a captions.csv that is a folder or a link to
    nothing (where it would be read: CMLE on): meant as captions, it left the fit on pseudo-text without
    a word."""
    folders = set(path.parent for path in images)
    if not cmle or len(folders) != 1:
        return  # captions.csv is not read there, whatever it is (said by _folder_captions where it is a file)
    path = folders.pop() / "captions.csv"
    if (path.is_symlink() or path.exists()) and not path.is_file():
        log.warning("%s (%s): not a file, so not read, and the images get pseudo-text instead of captions; put "
                    "the file,text CSV there", path, kind_of_non_file(path))


def _is_folder(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # Python 3.11 raises on a folder it may not enter (lost+found): not one of ours
        return False


def _mvtec_refusal(root: Path) -> Optional[str]:
    """Why ``root`` cannot be fitted on when it holds no images of its own and is an MVTec root or a
    part of one (else None), and what to pass instead."""
    here = root.resolve()
    if (root / "test").is_dir():
        holds = sorted(subfolder_names(root / "train"))
        found = f" (train/ holds {name_some(holds, 3)}: rename the folder of good parts to good)" if holds else ""
        return (f"{root} looks like an MVTec root (it has test/) but has no train/good folder of good images to fit "
                f"on{found}; put them there, or pass the folder of good images itself")
    categories = sorted(sub.name for sub in root.iterdir() if _is_folder(sub / "train"))
    if categories:
        return (f"{root} looks like a folder of categories ({name_some(categories, 5)}): fit one model per "
                f"category; pass one category folder (e.g. {root / categories[0]})")
    if here.name == "train" and (root / "good").is_dir():
        return (f"{root} is the train/ folder of an MVTec layout: pass the MVTec root, the folder above it "
                f"({here.parent}), or {root / 'good'}")
    if here.name in ("test", "ground_truth") and (here.parent / "test").is_dir():
        holds = "defects beside good parts" if here.name == "test" else "defect masks"
        return (f"{root} is the {here.name}/ folder of an MVTec layout, which holds {holds}: fit on images of good "
                f"parts only: put them in {here.parent / 'train' / 'good'} and pass {here.parent}, or pass a folder "
                "of them")
    return None


def fit(images: str | Path | MVTecDataset | Iterable[str | Path | np.ndarray | Sample], config: ModelConfig = ModelConfig(), *,
        captions: Optional[dict[str, str]] = None, progress: Optional[bool] = None,
        bgr: bool = False) -> tuple[CMGModel, dict]:
    """Fit a CMG detector on normal images.

    images: a folder of good images, an MVTec root (its ``train/good``; or an :class:`MVTecDataset`) or
        a glob pattern; or image paths, good :class:`Sample` s (``elpv_dataset()``'s train list) and arrays (uint8 RGB, or what :func:`edgecmg.imageio.to_rgb_uint8` converts: gray,
        RGBA, 16-bit, floats in [0, 1]). Unreadable files are skipped and reported, and so are images
        that copy another pixel for pixel. Give images of different parts: near-copies (one part
        standing still before the camera) on both sides of the held-out split set the threshold too low.
        A folder is read non-recursively (its sub-folders holding images are named); a generator's arrays
        are copied as they come, so a camera SDK may refill one buffer for every frame.
    config: the prompt and every model setting, e.g. ``ModelConfig(prompt="a photo of a metal part")``.
    captions: optional {file name: caption} for CMLE's language structure; otherwise pseudo-text. Given
        a folder, its ``captions.csv`` (file,text; see :func:`read_captions`) is read when present and
        CMLE is on.
    progress: progress bars; by default where they can be seen (a terminal or a notebook), not in a log.
    bgr: the arrays among ``images`` are in OpenCV's BGR order (``cv2.imread``, ``cap.read()``), as
        ``Detector.predict(bgr=True)`` takes them; files are read as RGB either way.
    Returns the model (eval mode) and its metadata; save both with ``edgecmg.artifact.save(model,
    metadata, "part.edgecmg")``, or judge frames at once with ``Detector.from_model(model, metadata)``.
    """
    config = expect_config(config, ModelConfig, "fit(images, config)")
    forking.note_torch_work()  # a child forked after a fit needs one torch thread (edgecmg.model.forking)
    if config.matcher == "clip":  # a mistyped weights path or a missing open_clip: said before any image is read
        from edgecmg.model.matcher import ClipMatcher

        ClipMatcher.check_weights(config.clip_arch, config.clip_weights, fitting=True)
    if captions is not None and not isinstance(captions, Mapping):
        raise ConfigError(f"captions= takes a dict of image file name -> text, got a {type(captions).__name__}; "
                          "or put a captions.csv (file,text) in the training folder")
    progress = show_progress(progress)
    started = time.perf_counter()
    source = ""  # where the images came from, for the too-few error
    if isinstance(images, MVTecDataset):  # read as its root is: its train/good, and captions.csv there
        images = images.root
    if isinstance(images, (str, Path)):
        source = f" in {images}"
        images = training_images(images)
        if captions is None:
            captions = _folder_captions(images, config.cmle)
    if captions:  # given or read: matched on one form of each name (caption_key)
        captions = {caption_key(name): text for name, text in captions.items()}
    training = _Training(images, bgr=bgr)
    if 0 < len(training.names) < MIN_TRAIN_IMAGES:
        # Too few headers read to fit on: the refusal counts the images that decode, and are distinct, not
        # the headers a truncated file keeps (six unreadable files were "found 4 of the 6 given"). So few
        # are read at once.
        training.drop_copies(training.read_at(choose_input_size(training.shapes, config), progress))
    _require_enough(len(training.names), source, training.offered)
    size = choose_input_size(training.shapes, config)
    # Said before the work: without a terminal (a log, CI) there are no progress bars, and a first fit
    # loading the backbone and text model ran half a minute in silence.
    log.info("fitting on %d images at %dx%d", len(training.names), size[0], size[1])
    frames = training.drop_copies(training.read_at(size, progress))
    # The size stays the one chosen before reading: a file that failed or was a copy only moves the
    # median aspect a little.
    _require_enough(len(frames), source, training.offered)
    names, shapes = training.names, training.shapes
    if captions and config.cmle:
        _warn_unmatched_captions(captions, names)
    _warn_odd_aspects(shapes, names, size)
    _warn_tiny(shapes, names, size)
    geometry = Geometry(size, config.grid, config.features)
    cmer.cell_index(*geometry.head_size, config.grid)  # validates grid against the head map early

    backbone, backbone_hash = load_pretrained()
    channels = geometry.layout.channels
    n = len(frames)
    n_holdout = _holdout_count(n)
    feature_dim = _projection_dim(config, channels, n - n_holdout) if config.cmle else channels
    matcher = build_matcher(_matcher_spec(config), backbone._fc)
    matcher.set_prompt(config.prompt)  # the text side is encoded once, here
    model = CMGModel(backbone, geometry, feature_dim=feature_dim, bank_size=1, use_cmer=config.cmer,
                     use_cmle=config.cmle, knn_k=config.knn_k, smoothing_sigma=config.smoothing_sigma,
                     matcher=matcher, score_top_fraction=config.score_top_fraction)
    model.eval()

    collected = _collect(model, frames, config.batch_size, progress, text_space=config.cmle,
                         match_gains=config.cmer)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed))
    holdout, bank_images = order[:n_holdout], order[n_holdout:]
    # Memory grows with the image count from here: only the holdout's pixels are read again, and
    # each per-image quantity is held once (fit on 2,000 images peaked at 3.4 GB before).
    holdout_frames = [frames[int(i)] for i in holdout]
    holdout_names = [names[int(i)] for i in holdout]
    del frames

    patches = collected.patches                            # [N, P, C] fp16
    collected.patches = None
    if config.cmle:
        text = _text_embeddings(names, captions, torch.cat(collected.text_space), matcher)
        image_features = torch.cat(collected.image_features)   # [N, C]
        _fit_cmle(model, text[bank_images], image_features[bank_images], config, feature_dim)
    else:
        model.featurizer.projection.copy_(torch.eye(channels))

    bank_patches = _project_bank(model, patches, bank_images)
    del patches
    bank_size = min(config.max_bank_size, max(1, int(len(bank_patches) * config.coreset_ratio)))
    with tqdm(total=bank_size, desc="coreset", unit="pt", disable=not progress) as bar:
        chosen = bank_ops.greedy_coreset(bank_patches, bank_size, seed=config.seed, progress=bar.update)
    model.scorer.set_bank(bank_patches[chosen])
    model.scorer.normal_map.copy_(_normal_level(model, bank_patches, chosen, len(bank_images), progress))

    if config.cmer:
        # From the bank images only: the threshold below is set on the holdout as unseen parts, so its
        # scores must be gated as a new part's would be (margins fitted on them would never gate them).
        margins = cmer.fit_margin(torch.cat(collected.gains)[bank_images], config.cmer_quantile,
                                  config.cmer_slack)  # gains [N, K] -> margins [K]
    else:
        margins = torch.zeros_like(model.scorer.cmer_margin)
    model.scorer.cmer_margin.copy_(margins)

    threshold, threshold_left_out = _fit_threshold(model, holdout_frames, holdout_names, config, progress)
    captioned = len(set(captions) & {caption_key(name) for name in names}) if captions and config.cmle else 0
    training_info = {
        "images": n, "bank_images": int(len(bank_images)), "holdout_images": int(n_holdout),
        "copies_left_out": len(training.copies), "threshold_left_out": threshold_left_out,
        # Which images the model never saw in its bank, and which of those offered it did not train on:
        # names (the first RECORDED_NAMES of each; the counts are whole), as the log said them.
        "holdout": holdout_names[:RECORDED_NAMES],
        "copies": [copy for copy, _ in training.copies[:RECORDED_NAMES]],
        "unreadable_skipped": len(training.skipped),
        "unreadable": [path.name for path, _ in training.skipped[:RECORDED_NAMES]],
        "captioned_images": captioned,  # CMLE's text from captions.csv or captions=; the others pseudo-text
        # what Detector compares frames with: a frame of another shape is stretched by the resize
        "aspect_hw": round(median_aspect(shapes), 4),
        "bank_size": int(bank_size), "feature_dim": int(feature_dim),
        "seconds": round(time.perf_counter() - started, 2),
    }
    metadata = _metadata(config, size, backbone_hash, threshold, margins, training_info)
    # The count said before the work ("fitting on 54 images") is of the headers that read: where images were
    # left out since, or before it, this line says how many of those given the model was fitted on.
    copies = len(training.copies)
    left_out = [f"{len(training.skipped)} unreadable"] if training.skipped else []
    if copies:
        left_out.append("1 as a copy of another" if copies == 1 else f"{copies} as copies of others")
    given = f" of the {training.offered} given" if left_out else ""
    log.info("fitted on %d images%s in %.1f s (bank %d x %d)%s", n, given, training_info["seconds"], bank_size,
             feature_dim, f"; left out (named above): {', '.join(left_out)}" if left_out else "")
    return model.eval(), metadata


def caption_key(name: str) -> str:
    """A file name as captions.csv and the image files are matched on: its NFC form. "café" can be
    written two ways, é as one character (what keyboards give, and captions.csv held) or as e and an
    accent (what macOS file systems gave the file), which look the same in every message."""
    return unicodedata.normalize("NFC", name)


def _warn_unmatched_captions(captions: dict[str, str], names: list[str]) -> None:
    """Captions are matched by file name: a path or another name leaves the image uncaptioned."""
    names = [caption_key(name) for name in names]
    absent = sorted(set(captions) - set(names))
    if absent:
        log.warning("%d of %d caption(s) name no training image (%s): captions are matched by file name "
                    "alone (e.g. %s), %d of %d images captioned", len(absent), len(captions),
                    name_some(absent, 3), names[0] if names else "-",
                    len(set(captions) & set(names)), len(names))


def _holdout_count(n: int) -> int:
    """How many of ``n`` training images are held out to set the threshold (warned when few)."""
    n_holdout = max(2, int(round(n * HOLDOUT_FRACTION)))
    if n_holdout < FEW_THRESHOLD_IMAGES:
        # A quantile of a handful of scores is about their maximum: a loose guess at the threshold.
        log.warning("the threshold is set on %d held-out good images (of %d); below %d it is a rough guess, "
                    "and more good parts than expected may be flagged: fit on %d or more images, or set a threshold "
                    "from good frames of your line (edgecmg threshold M DIR, or Detector.load(threshold=...))",
                    n_holdout, n,
                    FEW_THRESHOLD_IMAGES, math.ceil(FEW_THRESHOLD_IMAGES / HOLDOUT_FRACTION))
    return n_holdout


def _projection_dim(config: ModelConfig, channels: int, bank_images: int) -> int:
    """CMLE's output size: the configured one, unless the channels or the bank images allow fewer."""
    # CMLE finds at most (bank images - 1) directions: the span of the centred image features.
    span = bank_images - 1
    feature_dim = min(config.cmle_dim, channels, span)
    if feature_dim < config.cmle_dim:
        log.warning("CMLE output reduced from %d to %d dims: it cannot exceed the %d channels or the "
                    "number of bank images - 1 (%d); fit on more images for the full size",
                    config.cmle_dim, feature_dim, channels, span)
    return feature_dim


def _fit_cmle(model: CMGModel, text: torch.Tensor, image_features: torch.Tensor, config: ModelConfig,
              feature_dim: int) -> None:
    """Set the model's projection from the bank images' text embeddings and image features."""
    weights = cmle.lle_weights(text, config.cmle_neighbors)
    mean, projection = cmle.fit_projection(image_features, weights, feature_dim)
    model.featurizer.proj_mean.copy_(mean)
    model.featurizer.projection.copy_(cmle.unit_directions(projection))


def _fit_threshold(model: CMGModel, holdout_frames: list[np.ndarray], holdout_names: list[str], config: ModelConfig,
                   progress: bool) -> tuple[float, list[str]]:
    """Score the held-out images, centre the scores on them; the threshold (also stored) and the
    held-out images left out of it."""
    holdout_scores, holdout_map_mean = _score_holdout(model, holdout_frames, config.batch_size, progress)
    # The level's pattern comes from the bank images; its height is set so that held-out good parts
    # average 0. (With a small bank, images scored without their own rows score higher than new parts
    # do.) One constant moves every score and the threshold together: no decision or ranking changes.
    model.scorer.normal_map += holdout_map_mean
    holdout_scores = holdout_scores - holdout_map_mean
    threshold, left_out = threshold_from_scores(holdout_scores, config.threshold_quantile, holdout_names)
    model.scorer.threshold.fill_(threshold)
    return threshold, left_out


def _metadata(config: ModelConfig, size: tuple[int, int], backbone_hash: str, threshold: float,
              margins: torch.Tensor, training_info: dict) -> dict:
    """The artifact's metadata: what loading, scoring and a reader of the file need."""
    return {
        "backbone": {"id": BACKBONE_ID, "sha256": backbone_hash},
        "input_size": list(size),
        "features": config.features,
        "normalization": {"mean": list(MEAN), "std": list(STD), "layout": "uint8 RGB HWC"},
        "grid": config.grid,
        "prompt": config.prompt,
        "threshold": threshold,
        "cmer_margin": [round(float(m), 6) for m in margins],
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
        "training": training_info,
        "created": {"time": datetime.now().astimezone().isoformat(timespec="seconds"), "edgecmg": __version__,
                    "torch": torch.__version__, "python": platform.python_version(), "host": platform.node()},
    }


class _Training:
    """The training images, met in two passes: their sizes first (from file headers, so the model
    size can be chosen on all of them), then their pixels, each image kept only at the model size.
    A folder of 5-megapixel frames would otherwise sit in memory whole until the features are taken."""

    def __init__(self, images: Iterable[str | Path | np.ndarray], bgr: bool = False) -> None:
        self.bgr = bool(bgr)
        if isinstance(images, np.ndarray) and images.ndim != 4:
            raise DataError(f"fit takes a folder, or a list of image paths or arrays (or an [N, H, W, C] array), "
                            f"got one array of shape {images.shape}")
        if images is None or not hasattr(images, "__iter__"):  # iterated below, a None or a number was a TypeError
            raise ConfigError(f"fit takes a folder, a glob, or a list of image paths or arrays, got "
                              f"{'None' if images is None else 'a value of type ' + type(images).__name__}")
        self.sources: list[Path | np.ndarray] = []
        self.names: list[str] = []  # file names; ``array<i>`` for arrays
        self.shapes: list[tuple[int, int]] = []  # (height, width) as given, before the resize
        self.skipped: list[tuple[Path, str]] = []
        self.copies: list[tuple[str, str]] = []  # (copy, the image it repeats), left out by drop_copies
        self.offered = 0
        # A one-shot iterator (a generator over a camera SDK's frames) may hand out one buffer refilled
        # for every frame, so its arrays are kept as converted copies, taken as they arrive: that costs no
        # memory there, nobody else holding them. A list's or an array's items the caller holds: kept
        # as they are (a copy would hold every image twice), and converted when read.
        self.own_copies = iter(images) is images
        for i, item in enumerate(images):
            self.offered += 1
            if isinstance(item, Sample):  # a dataset's own samples (elpv_dataset's train list): their files
                if item.label != 0:
                    raise DataError(f"training image {i} ({item.path}) is labelled a defect ({item.defect_type}): "
                                    "fit on good parts only")
                item = item.path
            if isinstance(item, (str, Path)):
                if isinstance(item, str) and is_glob_pattern(item):
                    raise DataError(f"training image {i} is a glob pattern ({item!r}): pass the pattern itself, "
                                    f"fit({item!r}), not inside a list")
                try:
                    shape = read_image_size(item)
                except DataError as exc:
                    self._skip(Path(item), str(exc))
                    continue
                self._keep(Path(item), Path(item).name, shape)
                continue
            try:
                # checked here, so a bad array fails before any work
                frame = to_rgb_uint8(item, bgr=self.bgr, copy=self.own_copies)
            except DataError as exc:
                raise DataError(f"training image {i}: {exc}") from None
            self._keep(frame if self.own_copies else item, f"array{i}", frame.shape[:2])
        if self.offered == 0:
            raise DataError("no training images given: pass a folder of good images (MVTec: DATA/train/good)")

    def _keep(self, source: Path | np.ndarray, name: str, shape: tuple[int, int]) -> None:
        self.sources.append(source)
        self.names.append(name)
        self.shapes.append((int(shape[0]), int(shape[1])))

    def _skip(self, path: Path, reason: str) -> None:
        self.skipped.append((path, reason))
        warn_unreadable(path, reason)

    def read_at(self, size: tuple[int, int], show: bool) -> list[np.ndarray]:
        """Every image as uint8 RGB at ``size``; files that fail to decode now (an intact header over
        a damaged body) are skipped and reported, and leave ``names`` and ``shapes`` with the rest."""
        def at_size(source: Path | np.ndarray) -> np.ndarray | DataError:
            try:
                if isinstance(source, Path):
                    image = read_image(source)
                elif self.own_copies:  # converted on arrival
                    image = source
                else:
                    image = to_rgb_uint8(source, bgr=self.bgr)
                return resize_to_input(image, size)
            except DataError as exc:
                return exc

        frames, kept = [], []
        # Decoding and resizing run in OpenCV without the GIL, so threads share them out (120 JPEGs of
        # 5 megapixels took 2.5 s on one thread). map() keeps the order; a full-size frame lives only
        # inside its worker, so at most one per thread is in memory.
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            done = pool.map(at_size, self.sources)
            for index, result in enumerate(tqdm(done, total=len(self.sources), desc="reading", unit="img",
                                                disable=not show)):
                if isinstance(result, DataError):
                    self._skip(self.sources[index], str(result))
                    continue
                frames.append(result)
                kept.append(index)
        self._keep_only(kept)
        warn_skipped_count(len(self.skipped), self.offered)
        return frames

    def drop_copies(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        """``frames`` (what read_at returned) without every image that repeats an earlier one pixel
        for pixel, which is named. A held-out copy of a bank image would score as if seen before:
        copies on both sides of the split set the threshold below what new good parts score, and
        every part is then flagged."""
        first_of: dict[bytes, int] = {}
        unique, kept, copies = [], [], self.copies
        for index, frame in enumerate(frames):
            key = hashlib.blake2b(frame.tobytes(), digest_size=16).digest()
            if key in first_of:
                copies.append((self.names[index], self.names[first_of[key]]))
                continue
            first_of[key] = index
            unique.append(frame)
            kept.append(index)
        self._keep_only(kept)
        if copies:
            log.warning("%d training image(s) left out as copies of others, pixel for pixel (%s): a copy on each "
                        "side of the held-out split would set the threshold too low", len(copies),
                        name_some([f"{copy} = {original}" for copy, original in copies], 3))
        return unique

    def _keep_only(self, indices: list[int]) -> None:
        self.sources = [self.sources[i] for i in indices]
        self.names = [self.names[i] for i in indices]
        self.shapes = [self.shapes[i] for i in indices]


def _matcher_spec(config: ModelConfig) -> dict:
    if config.matcher == "clip":
        return {"kind": "clip", "arch": config.clip_arch, "weights": config.clip_weights}
    return {"kind": "zeroshot"}


def _text_embeddings(names: list[str], captions: Optional[dict[str, str]], pseudo: torch.Tensor,
                     matcher) -> torch.Tensor:
    """Per-image text: the caption where there is one, else the matcher's pseudo-text of the image."""
    if not captions:
        return pseudo
    pseudo = pseudo.clone()
    keys = [caption_key(name) for name in names]
    have = [i for i, key in enumerate(keys) if key in captions]
    if have:
        pseudo[have] = matcher.encode_texts([captions[keys[i]] for i in have]).to(pseudo.dtype)
    return pseudo


@torch.no_grad()
def _project_bank(model: CMGModel, patches: torch.Tensor, bank_images: torch.Tensor,
                  chunk: int = 64) -> torch.Tensor:
    """The bank images' patches [N, P, C] (fp16), projected to float32 [N_bank * P, d], image after image
    in bank_images' order. In chunks of images: the float32 copy and the centred temporary of every
    bank patch at once cost 4x the fp16 patches again."""
    per_image = patches.shape[1]
    out = torch.empty((len(bank_images) * per_image, model.featurizer.projection.shape[1]))
    for start in range(0, len(bank_images), chunk):
        images = bank_images[start:start + chunk]
        out[start * per_image:(start + len(images)) * per_image] = \
            model.featurizer.project(patches[images].flatten(0, 1).float())
    return out


@torch.no_grad()
def _normal_level(model: CMGModel, bank_patches: torch.Tensor, chosen: torch.Tensor, n_images: int,
                  progress: bool) -> torch.Tensor:
    """Mean raw map [H, W] of bank images, each scored as an unseen image: against the bank without
    the rows the coreset took from it. (Scored against the whole bank they would match themselves
    and look far more normal than new parts do.) The holdout stays out of its pattern, so the
    threshold set on the holdout judges maps the level was not fitted on; fit then sets its height."""
    per_image = bank_patches.shape[0] // n_images
    owner = chosen // per_image  # bank_patches holds the bank images' patches image after image
    picks = torch.linspace(0, n_images - 1, min(n_images, NORMAL_LEVEL_IMAGES)).round().long().unique()
    scorer = model.scorer
    maps = []
    for j in tqdm(picks.tolist(), desc="normal level", unit="img", disable=not progress):
        others = owner != j
        if int(others.sum()) < scorer.knn_k:  # a tiny bank may hold too few rows from other images
            continue
        patches = bank_patches[j * per_image:(j + 1) * per_image][None]
        maps.append(scorer.raw_maps(scorer.patch_scores(patches, bank_rows=others))[0])
    if not maps:
        log.warning("no normal level for the maps: the memory bank holds too few rows outside each image; "
                    "fit on more images")
        return torch.zeros_like(scorer.normal_map)
    return torch.stack(maps).mean(dim=0)


@torch.no_grad()
def _score_holdout(model: CMGModel, frames: list[np.ndarray], batch_size: int,
                   progress: bool = False) -> tuple[np.ndarray, float]:
    """Image scores of the held-out images (uint8 RGB at the model size), and the mean value of their maps."""
    scores, map_sums = [], 0.0
    # A bar of its own: 200 held-out images take 8 s on 2 cores, after the coreset's bar has ended.
    for start in tqdm(range(0, len(frames), batch_size), desc="threshold", unit="batch", disable=not progress):
        batch = torch.stack([torch.from_numpy(f) for f in frames[start:start + batch_size]])
        out = model(batch)
        scores.append(out.score)
        map_sums += float(out.anomaly_map.double().mean(dim=(1, 2)).sum())
    return torch.cat(scores).numpy(), map_sums / len(frames)


