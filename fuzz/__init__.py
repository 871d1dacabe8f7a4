"""tidlc's fuzz campaigns (not installed with tidlc; run from the project root: python -m fuzz)."""
