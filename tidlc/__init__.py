"""tidlc: an open, pluggable model compiler for TI's TDA4 SoCs (C7x + MMA)."""
__version__ = "0.1.0"
