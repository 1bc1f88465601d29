"""The EfficientNet-Lite0 stage table and the named feature layouts over its blocks.

Kept free of torch so that configuration and the CLI can validate a layout name without loading it.
"""
from __future__ import annotations

from dataclasses import dataclass

from edgecmg.errors import ConfigError

# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage, EfficientNet-Lite0.
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


def _block_table() -> tuple[tuple[int, int], ...]:
    """(output channels, stride w.r.t. the input) of every MBConv block, in order."""
    table, stride = [], 2  # the stem halves the input
    for repeats, _, stage_stride, _, _, c_out in LITE0_STAGES:
        stride *= stage_stride
        table.extend([(c_out, stride)] * repeats)
    return tuple(table)


BLOCKS = _block_table()


@dataclass(frozen=True)
class FeatureLayout:
    """Which backbone blocks make a patch feature, and the stride of the patch grid they share.

    Blocks finer than ``stride`` are average-pooled to it, coarser ones bilinearly upsampled.

    response_offset: how many input pixels up and left of its grid cell the content lies that a
    patch feature responds to. The weights were trained in TensorFlow with "SAME" padding (for a
    stride-2 convolution the zero rows come after the image); the network here pads symmetrically,
    which moves every feature up and left, so a map drawn cell by cell shows a defect below and
    right of where it is. The anomaly map is moved back by this many pixels. (TensorFlow's padding
    instead centres the features but, measured, costs image AUROC: KolektorSDD 0.899 -> 0.804,
    elpv 0.955 -> 0.946.) Measured by painting a 6-pixel dot on training images and taking the
    centroid of the map's rise (KolektorSDD 800x320 and elpv 256x256; "s16": 23.8 / 20.8 and
    27.1 / 25.6 px down / right, "s8": 11.6 / 12.2 and 13.0 / 13.1);
    ``tests/model/test_map_alignment.py`` repeats the measurement.
    """

    name: str
    blocks: tuple[int, ...]
    stride: int
    response_offset: int

    @property
    def channels(self) -> int:
        return sum(BLOCKS[i][0] for i in self.blocks)


# "s16" (default): blocks 10 (112 ch, stride 16) + 14 (192 ch, stride 32) on a stride-16 grid, 304 ch.
#   On KolektorSDD and elpv it beat the finer layout in image AUROC (benchmarks/results/core.md)
#   and has 4x fewer patches per frame, so the kNN search costs 4x less.
# "s8": blocks 4 (40 ch, stride 8) + 7 (80 ch) + 10 (112 ch, stride 16) on a stride-8 grid, 232 ch:
#   for defects smaller than a 16-pixel cell.
FEATURE_LAYOUTS = {
    "s16": FeatureLayout("s16", (10, 14), 16, response_offset=24),
    "s8": FeatureLayout("s8", (4, 7, 10), 8, response_offset=12),
}
DEFAULT_LAYOUT = "s16"
# Models written before layouts were named used "s8".
LEGACY_LAYOUT = "s8"


def feature_layout(name: str) -> FeatureLayout:
    if name not in FEATURE_LAYOUTS:
        raise ConfigError(f"features={name!r}: choose one of {', '.join(FEATURE_LAYOUTS)}")
    return FEATURE_LAYOUTS[name]
