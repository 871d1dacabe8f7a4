"""tidlc.backends.tidl package: the TIDL backend (net.bin + io.bin, the fixed-point executor,
the perf model), registered through the ``tidlc_backends`` hook like any plugin backend."""
from tidlc.hookspecs import hookimpl


@hookimpl
def tidlc_backends():
    from tidlc.backends.tidl.backend import TidlBackend  # light: methods import the rest

    return [TidlBackend()]
