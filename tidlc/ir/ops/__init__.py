"""The builtin op tables. Importing this package registers every builtin op."""
from tidlc.ir.ops import (  # noqa: F401  # noqa: F401
    detection,
    elementwise,
    fixed,
    host,
    io,
    mediapipe,
    nn,
    quant,
    tensor,
    unpool,
)
from tidlc.ir.ops._common import ACTIVATIONS, apply_act  # noqa: F401
