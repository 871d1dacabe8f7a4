"""Fixed-point execution of quantized graphs: the numpy specification (``reference``) and the
executor that runs a graph with it (``executor``). See docs/quantization.md."""
from tidlc.backends.tidl.fixed.executor import FixedExecutor, graph_is_quantized, run_fixed

__all__ = ["FixedExecutor", "graph_is_quantized", "run_fixed"]
