"""molfold: E(3)-equivariant graph neural networks for molecules and materials."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["MolfoldCalculator", "__version__", "load_model", "predict_conformers"]


def __getattr__(name: str):
    # Lazy imports keep `import molfold` fast and free of heavy dependencies until used.
    if name == "load_model":
        from molfold.models.registry import load_model

        return load_model
    if name == "MolfoldCalculator":
        from molfold.calculator import MolfoldCalculator

        return MolfoldCalculator
    if name == "predict_conformers":
        from molfold.conformers.predict import predict_conformers

        return predict_conformers
    raise AttributeError(f"module 'molfold' has no attribute {name!r}")
