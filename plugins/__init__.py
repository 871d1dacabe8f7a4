"""tidlc.plugins package."""
