"""Builtin device files of the performance model (``*.toml``, shipped as package data).

Plugins add devices through the ``tidlc_devices`` hook instead of writing here.
"""
