"""The C7x/MMA performance model (``tidlc perf``; docs/perf.md).

``estimate(graph, device, options) -> PerfReport`` is the API the backend
embeds (``PerfReport.to_json()`` is stable, schema ``tidlc.perf/1``). Device
parameters come from TOML files (``load_device``); plugins add devices through
the ``tidlc_devices`` hook.
"""
from tidlc.backends.tidl.perf.device import Device, available_devices, load_device
from tidlc.backends.tidl.perf.model import (
                                            HAVE_CYTHON,
                                            JSON_SCHEMA,
                                            Hint,
                                            LayerPerf,
                                            PerfOptions,
                                            PerfReport,
                                            estimate,
                                            prepare,
                                            report,
)

__all__ = [
                                            "HAVE_CYTHON",
                                            "JSON_SCHEMA",
                                            "Device",
                                            "Hint",
                                            "LayerPerf",
                                            "PerfOptions",
                                            "PerfReport",
                                            "available_devices",
                                            "estimate",
                                            "load_device",
                                            "prepare",
                                            "report",
]
