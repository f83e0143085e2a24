"""molfold: E(3)-equivariant graph neural networks for molecules and materials."""

from __future__ import annotations

from molfold._version import __version__

__all__ = ["MolfoldCalculator", "__version__", "load_model", "predict_conformers", "save_model"]


def __getattr__(name: str):
    # Lazy imports keep `import molfold` fast and free of heavy dependencies until used.
    if name in ("load_model", "save_model"):
        from molfold.models import checkpoint

        return getattr(checkpoint, name)
    if name == "MolfoldCalculator":
        from molfold.calculator import MolfoldCalculator

        return MolfoldCalculator
    if name == "predict_conformers":
        from molfold.conformers.predict import predict_conformers

        return predict_conformers
    raise AttributeError(f"module 'molfold' has no attribute {name!r}")
