"""tidlc.frontends package."""
