"""The public API of the core packages is a curated list: changing it must be deliberate."""
import tidlc.ir
import tidlc.passes


def test_ir_public_names():
    assert sorted(tidlc.ir.__all__) == sorted([
        "OPS", "AttrSpec", "Builder", "Graph", "Op", "OpDef", "QuantInfo", "TensorType", "Value", "get_opdef",
        "infer_types", "parse_graph", "print_graph", "verify"])
    assert all(hasattr(tidlc.ir, name) for name in tidlc.ir.__all__)


def test_passes_public_names():
    assert sorted(tidlc.passes.__all__) == sorted([
        "Pass", "PassContext", "PassManager", "Rewriter", "apply_rules", "default_pipeline", "parse_pipeline"])
    assert all(hasattr(tidlc.passes, name) for name in tidlc.passes.__all__)
