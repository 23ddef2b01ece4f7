"""The Core ML program reader and numpy MIL interpreter, in three parts read top to bottom:
`program` (loading a saved ML Program and its weight blobs), `ops` (the op table) and
`interpreter` (running the main function).

    from export.mil import run_mil, load_program, supported_ops
"""

from export.mil.interpreter import PRECISIONS, run_mil
from export.mil.ops import OPS, check_supported, supported_ops
from export.mil.program import (
    PRECISION_KEY,
    MILFormatError,
    Program,
    TensorSpec,
    UnsupportedOpError,
    load_program,
    tensor_spec,
)

__all__ = [
    "OPS",
    "PRECISIONS",
    "PRECISION_KEY",
    "MILFormatError",
    "Program",
    "TensorSpec",
    "UnsupportedOpError",
    "check_supported",
    "load_program",
    "run_mil",
    "supported_ops",
    "tensor_spec",
]
