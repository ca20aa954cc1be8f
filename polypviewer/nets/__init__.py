"""The segmentation networks (torch only). Importing this package registers every model.

Add a model module to ``_MODEL_MODULES`` and decorate its builder with
``registry.register_model``; the parametrised tests pick it up automatically. Prompted
networks (``litemedsam``: box / point to mask) register with ``register_prompted_model``
and stay out of the frame segmenters' list.
"""

import importlib

from polypviewer.nets.registry import (
    ModelSpec,
    Preprocessing,
    UnknownModelError,
    build_model,
    get_spec,
    list_models,
)

_MODEL_MODULES = ("pranet", "resunetpp", "unet", "lite_pranet", "litemedsam")

for _m in _MODEL_MODULES:
    importlib.import_module(f"polypviewer.nets.{_m}")

__all__ = ["ModelSpec", "Preprocessing", "UnknownModelError", "build_model", "get_spec", "list_models"]
