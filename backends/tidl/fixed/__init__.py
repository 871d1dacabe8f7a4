"""Fixed-point execution of quantized graphs: the numpy specification (``reference``), the kernel
tables on it and on the fast exact kernels (``spec_kernels``, ``fast_kernels``), the dispatcher
that picks from them (``dispatch``) and the executor that runs a graph (``executor``). See
docs/quantization.md."""
from tidlc.backends.tidl.fixed.executor import FixedExecutor, graph_is_quantized, run_fixed

__all__ = ["FixedExecutor", "graph_is_quantized", "run_fixed"]
