"""The builtin op tables. Importing this package registers every builtin op."""
from tidlc.ir.ops import elementwise, io, nn, tensor  # noqa: F401
from tidlc.ir.ops import detection, unpool  # noqa: F401
from tidlc.ir.ops import fixed  # noqa: F401
from tidlc.ir.ops import quant  # noqa: F401
from tidlc.ir.ops._common import ACTIVATIONS, apply_act  # noqa: F401
