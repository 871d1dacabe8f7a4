"""tidlc.backends package."""
