"""tidlc.backends.onnx_qdq package: ``--target onnx-qdq``, tidlc's TIDL quantization written as an
ONNX QDQ model (+ TIDL's quantization-parameters prototxt) for TI's own tools (docs/ti-flow.md),
registered through the ``tidlc_backends`` hook like any plugin backend."""
from tidlc.hookspecs import hookimpl


@hookimpl
def tidlc_backends():
    from tidlc.backends.onnx_qdq.backend import OnnxQdqBackend  # light: methods import the rest

    return [OnnxQdqBackend()]
