"""edgecmg: language-guided visual anomaly detection for the edge.

The names most programs need are here, imported on first use so that ``import edgecmg`` (and the
command line's start) stays fast::

    import edgecmg
    from edgecmg.fit import fit

    model, metadata = fit("DATA", edgecmg.ModelConfig(prompt="a photo of a metal commutator"))
    edgecmg.save(model, metadata, "part.edgecmg")
    with edgecmg.Detector.load("part.edgecmg") as det:
        result = det.predict(edgecmg.read_image("frame.png"))

Everything else lives in its module (``edgecmg.export``, ``edgecmg.engine``, ``edgecmg.calibration``, ...).
``fit`` is not among these names: ``edgecmg.fit`` is its module, which Python binds to that attribute
once anything imports it, so ``edgecmg.fit(...)`` would work or not depending on import order.
"""
from typing import TYPE_CHECKING

# Private names, kept out of tab completion: `import edgecmg.pixel_limit` bound `edgecmg` itself here.
import edgecmg.pixel_limit as _pixel_limit  # noqa: F401  (first: it sets OpenCV's decode limit, read as cv2 loads)
from edgecmg.lazy import lazy_exports as _lazy_exports

__version__ = "0.1.0"

# Type checkers and IDEs see the names; at run time they are imported on first use. "X as X" marks each
# as re-exported: a strict checker (mypy --no-implicit-reexport) refused `from edgecmg import Detector`.
if TYPE_CHECKING:
    from edgecmg.artifact import save as save
    from edgecmg.config import EngineConfig as EngineConfig
    from edgecmg.config import ExportConfig as ExportConfig
    from edgecmg.config import ModelConfig as ModelConfig
    from edgecmg.config import StreamConfig as StreamConfig
    from edgecmg.detector import Detector as Detector
    from edgecmg.errors import EdgeCMGError as EdgeCMGError
    from edgecmg.imageio import read_image as read_image
    from edgecmg.result import Result as Result

# public name -> the module that defines it
_EXPORTS = {
    "Detector": "edgecmg.detector",
    "Result": "edgecmg.result",
    "save": "edgecmg.artifact",
    "read_image": "edgecmg.imageio",
    "ModelConfig": "edgecmg.config",
    "StreamConfig": "edgecmg.config",
    "ExportConfig": "edgecmg.config",
    "EngineConfig": "edgecmg.config",
    "EdgeCMGError": "edgecmg.errors",
}

__all__ = ["__version__", *_EXPORTS]
__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS)
