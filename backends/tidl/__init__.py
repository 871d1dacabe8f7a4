"""tidlc.backends.tidl package."""
