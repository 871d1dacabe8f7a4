"""Pass framework: base class, rewrite tables, pass manager and -O pipelines."""
from tidlc.passes.base import Pass, PassContext
from tidlc.passes.manager import PassManager, default_pipeline, parse_pipeline
from tidlc.passes.rewrite import Rewriter, apply_rules

__all__ = ["Pass", "PassContext", "PassManager", "Rewriter", "apply_rules", "default_pipeline",
           "parse_pipeline"]
