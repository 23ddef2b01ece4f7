"""Export and on-Linux checks: ONNX (run with onnxruntime) and Core ML (ANE lint, MIL
interpreter). Submodules import lazily: `from export import to_onnx` loads only ONNX."""

from __future__ import annotations

import importlib

_LAZY = {
    "to_onnx": "export.onnx",
    "to_coreml": "export.coreml",
    "ane_lint": "export.lint",
    "run_mil": "export.mil",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'export' has no attribute {name!r}")
