"""Where good parts' scores put the threshold: their quantile, with the few far above the rest left out.

Shared by fit (its held-out images), ``edgecmg threshold`` and ``threshold_from_good`` (a line's own
good frames). Numpy only: judging good frames with an exported ``.onnx`` or an engine imports no torch.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from edgecmg.errors import DataError, name_some

log = logging.getLogger("edgecmg")

FEW_THRESHOLD_IMAGES = 20  # fewer held-out images than this: fit warns that the threshold is rough
OUTLIER_FENCE = 3.0  # good images' scores beyond Q3 + 3 x IQR are left out of a threshold (Tukey's "far out")
MIN_SCORES_FOR_OUTLIERS = 8  # below this the quartiles say too little to call a score far out
OUTLIER_SHARE = 0.05  # at most this share of the scores (at least one) is left out as strays


def threshold_from_scores(scores: Sequence[float], quantile: float, names: Sequence[str]) -> tuple[float, list[str]]:
    """The threshold that good images' ``scores`` set: their ``quantile``, leaving out the few scores
    far above the rest (Tukey's far-out fence, Q3 + 3 x IQR, from 8 scores on; at most 5% of them,
    at least one), whose ``names`` are returned and said. The 0.99 quantile of a few dozen scores is
    about their maximum, so one image unlike the others (a defect among the good images) would
    otherwise set it: a KolektorSDD holdout scoring 28.8 beside 24 others up to 5.5 set 23.2, and the
    model then missed 50 of 52 defects. More scores than that past the fence are a second kind of
    good part rather than strays: all are kept, and that is said."""
    values = np.asarray(scores, dtype=np.float64)
    if len(values) == 0 or len(names) != len(values) or not np.isfinite(values).all():
        raise DataError(f"a threshold needs finite scores, one name each: got {len(values)} score(s) "
                        f"({int((~np.isfinite(values)).sum())} not finite) for {len(names)} name(s)")
    far = np.zeros(len(values), dtype=bool)
    if len(values) >= MIN_SCORES_FOR_OUTLIERS:
        q1, q3 = np.quantile(values, [0.25, 0.75])
        if q3 > q1:  # scores that are all alike have no spread to measure "far above" by
            far = values > q3 + OUTLIER_FENCE * (q3 - q1)
    count, most = int(far.sum()), max(1, int(OUTLIER_SHARE * len(values)))
    if count > most:
        # Named, highest first: three defects among 40 good parts read as "a second kind" and set the
        # threshold at a defect's score; only a look at them tells the two apart.
        highest = sorted(np.flatnonzero(far), key=lambda i: -values[i])
        log.warning("%d of %d good image(s) score far above the others, too many to be strays: a second kind of good "
                    "part, kept in the threshold (%.4g; %.4g without them); look at them (%s), and fit on more of "
                    "them, or set a threshold per kind, or remove them if they are defects", count, len(values),
                    float(np.quantile(values, quantile)), float(np.quantile(values[~far], quantile)),
                    name_some([f"{names[i]}: {values[i]:.4g}" for i in highest], 5))
        far[:] = False
    left_out = [int(i) for i in np.flatnonzero(far)]
    if left_out:
        # Named highest first, five of them: up to 5% of the scores are left out, 100 names at 2,000 images.
        highest = sorted(left_out, key=lambda i: -values[i])
        log.warning("%d of %d good image(s) score far above the others and are left out of the threshold (%s; the "
                    "others score up to %.4g): a defect among the good images, or a part unlike the rest; look at "
                    "them", len(left_out), len(values),
                    name_some([f"{names[i]}: {values[i]:.4g}" for i in highest], 5), float(values[~far].max()))
    return float(np.quantile(values[~far], quantile)), [names[i] for i in left_out]
