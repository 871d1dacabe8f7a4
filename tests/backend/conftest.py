"""Fixtures of the backend tests."""
import pytest
from tidlc.backends.tidl.fixed import _igemm, fast


@pytest.fixture(params=_igemm.ISAS)
def isa(request):
    """Every integer-kernel variant (TIDLC_ISA: avx512vnni, avxvnni, avx2, c) in turn, forced with
    ``fast.set_isa``; those this CPU (or build) cannot run are skipped. A module may define its own
    ``isa`` (test_int16_kernels: the 16-bit kernels' variants)."""
    name = request.param
    if name not in _igemm.supported_isas():
        pytest.skip(f"this CPU (or build) cannot run the {name} variant")
    before = fast.isa()
    fast.set_isa(name)
    yield name
    fast.set_isa(before)
