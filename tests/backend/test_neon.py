"""The aarch64 NEON kernels (igemm_neon.h: SDOT and plain NEON convolution/dense, depthwise) equal
the numpy specification bit for bit. tests/backend/neon/harness.c is cross-compiled with
aarch64-linux-gnu-gcc (-O3, baseline armv8-a, as setup.py builds the extension: the SDOT code has
its own target attribute) and run under qemu-user: ``-cpu max`` has dotprod, ``-cpu cortex-a72`` has not
(the run-time choice must take plain NEON there). Skipped when the cross toolchain is missing
(Debian: gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)."""
import os
import shutil
import subprocess

import numpy as np
import pytest
from tidlc.backends.tidl.fixed import _igemm
from tidlc.backends.tidl.fixed import reference as ref

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIXED = os.path.join(ROOT, "backends", "tidl", "fixed")
HARNESS = os.path.join(HERE, "neon", "harness.c")
CC, QEMU = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64")
OUT_KINDS = (np.int8, np.uint8, np.int16, np.uint16)

needs_cross = pytest.mark.skipif(
    CC is None or QEMU is None,
    reason="no aarch64 cross toolchain (" + ", ".join(n for n, t in (("aarch64-linux-gnu-gcc", CC),
                                                                   ("qemu-aarch64", QEMU)) if t is None)
    + " missing; Debian: apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)")


def _out_hw(h, w, k, strides, pads, dil):
    ho = (h + pads[0] + pads[2] - dil[0] * (k[0] - 1) - 1) // strides[0] + 1
    wo = (w + pads[1] + pads[3] - dil[1] * (k[1] - 1) - 1) // strides[1] + 1
    return ho, wo


def _i64(*values):
    return np.array(values, "<i8").tobytes()


class Case:
    """One layer: its record for the harness and the specification's output (numpy)."""

    def __init__(self, kind, record, want):
        self.kind, self.record, self.want = kind, record, want


def conv_case(x, wt, bias, strides, pads, dil, mult, shift, out_dtype, lo=None, hi=None):
    """x (1, C, H, W) int8/uint8; prepared exactly as fast.VnniConv does for _igemm.ConvPlan."""
    info = np.iinfo(out_dtype)
    lo, hi = info.min if lo is None else lo, info.max if hi is None else hi
    m, c, kh, kw = wt.shape
    ho, wo = _out_hw(x.shape[2], x.shape[3], (kh, kw), strides, pads, dil)
    mult_arr = np.broadcast_to(np.asarray(mult, np.int64).reshape(-1), (m,))
    want = ref.mac_output(ref.add_bias(ref.conv2d_acc(x, wt, strides, pads, dil, 1), bias), 32, mult_arr, shift,
                          lo, hi).astype(out_dtype)
    signed = x.dtype == np.int8
    w2 = wt.reshape(m, -1)
    b = bias - 128 * w2.astype(np.int64).sum(axis=1) if signed else bias
    need_h = (ho - 1) * strides[0] + (kh - 1) * dil[0] + 1
    need_w = (wo - 1) * strides[1] + (kw - 1) * dil[1] + 1
    xb = x[0].view(np.uint8)
    xb = np.pad(xb, ((0, 0), (pads[0], max(0, need_h - xb.shape[1] - pads[0])),
                     (pads[1], max(0, need_w - xb.shape[2] - pads[1]))))
    record = (_i64(0, signed, c, xb.shape[1], xb.shape[2], kh, kw, *strides, *dil, ho, wo, m, c * kh * kw, shift,
                   OUT_KINDS.index(out_dtype), lo, hi)
              + np.ascontiguousarray(xb).tobytes() + _igemm.pack_weights(w2).tobytes()
              + np.asarray(b, "<i8").tobytes() + np.ascontiguousarray(mult_arr, "<i8").tobytes())
    return Case("conv", record, want[0].reshape(m, -1))


def dense_case(x, wt, bias, mult, shift, out_dtype):
    """x (rows, K) @ wt.T, as fast.VnniDense runs it: a 1x1 convolution of the (1, K, 1, rows) columns."""
    case = conv_case(np.ascontiguousarray(x.T).reshape(1, x.shape[1], 1, x.shape[0]), wt.reshape(wt.shape + (1, 1)),
                     bias, (1, 1), (0, 0, 0, 0), (1, 1), mult, shift, out_dtype)
    info = np.iinfo(out_dtype)
    want = ref.mac_output(ref.add_bias(ref.dense_acc(x, wt), bias, axis=-1), 32,
                          np.asarray(mult, np.int64), shift, info.min, info.max, axis=-1).astype(out_dtype)
    assert np.array_equal(case.want, want.T)  # the 1x1 form is the dense layer
    return case


def dw_case(x, wt, bias, strides, pads, dil, mult, shift, out_dtype):
    """Depthwise: x (1, C, H, W), wt (C, 1, kh, kw); the input is not padded (the kernel reads zeros)."""
    info = np.iinfo(out_dtype)
    c, _, kh, kw = wt.shape
    ho, wo = _out_hw(x.shape[2], x.shape[3], (kh, kw), strides, pads, dil)
    mult_arr = np.broadcast_to(np.asarray(mult, np.int64).reshape(-1), (c,))
    want = ref.mac_output(ref.add_bias(ref.conv2d_acc(x, wt, strides, pads, dil, c), bias), 32, mult_arr, shift,
                          info.min, info.max).astype(out_dtype)
    record = (_i64(1, x.dtype == np.int8, c, x.shape[2], x.shape[3], kh, kw, *strides, *dil, pads[0], pads[1], ho, wo,
                   shift, OUT_KINDS.index(out_dtype), info.min, info.max)
              + np.ascontiguousarray(x[0]).view(np.uint8).tobytes() + np.ascontiguousarray(wt).tobytes()
              + np.asarray(bias, "<i8").tobytes() + np.ascontiguousarray(mult_arr, "<i8").tobytes())
    return Case("dw", record, want[0].reshape(c, -1))


def _act(rng, signed, shape):
    return (rng.integers(-128, 128, shape).astype(np.int8) if signed
            else rng.integers(0, 256, shape).astype(np.uint8))


def _cases():
    rng = np.random.default_rng(2016)
    cases = []
    # random geometry: odd channel counts, K = C*kh*kw rarely a multiple of 4 or 16, every output type
    for t in range(14):
        cin, cout = int(rng.integers(1, 40)), int(rng.integers(1, 21))
        kh, kw = (int(v) for v in rng.integers(1, 4, 2))
        strides = tuple(int(v) for v in rng.integers(1, 4, 2))
        dil = tuple(int(v) for v in rng.integers(1, 3, 2))
        pads = tuple(int(v) for v in rng.integers(0, 3, 4))
        h = int(rng.integers((kh - 1) * dil[0] + 1, 24))
        w = int(rng.integers((kw - 1) * dil[1] + 1, 24))
        x = _act(rng, t % 2 == 0, (1, cin, h, w))
        wt = rng.integers(-128, 128, (cout, cin, kh, kw)).astype(np.int8)
        bias = rng.integers(-(1 << 20), 1 << 20, cout).astype(np.int64)
        mult = rng.integers(-(1 << 14), 1 << 14, cout) if t % 3 else int(rng.integers(1, 300))
        cases.append(conv_case(x, wt, bias, strides, pads, dil, mult, int(rng.integers(0, 30)), OUT_KINDS[t % 4]))
    # the largest sums: every activation at its extreme, every weight -128 (or 127), K = 3 * 7 * 5
    for signed, wv in ((True, -128), (False, -128), (True, 127), (False, 127)):
        x = np.full((1, 7, 9, 11), -128 if signed else 255, np.int8 if signed else np.uint8)
        wt = np.full((9, 7, 3, 5), wv, np.int8)
        cases.append(conv_case(x, wt, np.zeros(9, np.int64), (1, 1), (1, 2, 1, 2), (1, 1), 1, 12, np.int16))
    # int32 saturation of sum + bias (both ways), then a multiplier near 2**31 and shifts up to 62
    x = _act(rng, True, (1, 13, 6, 7))
    wt = rng.integers(-128, 128, (11, 13, 3, 3)).astype(np.int8)
    bias = np.array([(1 << 31) - 5, -(1 << 31) + 5] * 5 + [(1 << 40)], np.int64)
    cases.append(conv_case(x, wt, bias, (1, 1), (1, 1, 1, 1), (1, 1), 1, 24, np.int8))
    cases.append(conv_case(x, wt, bias, (1, 1), (1, 1, 1, 1), (1, 1), (1 << 31) - 1, 62, np.int16))
    cases.append(conv_case(x, wt, bias, (1, 1), (1, 1, 1, 1), (1, 1), -(1 << 31) + 1, 40, np.int16))
    # bounds beyond int32 (the scalar form of the output stage): values past int16 wrap like numpy's cast
    cases.append(conv_case(x, wt, bias // 1024, (1, 1), (1, 1, 1, 1), (1, 1), 3, 2, np.int16, lo=-(1 << 40),
                           hi=1 << 40))
    # rounding ties: mult 1 and small shifts put half of the values on .5 (negative ones included)
    for shift in (1, 2, 3):
        x = _act(rng, shift != 2, (1, 5, 8, 8))
        wt = rng.integers(-4, 5, (6, 5, 1, 3)).astype(np.int8)
        cases.append(conv_case(x, wt, rng.integers(-3, 4, 6).astype(np.int64), (1, 1), (0, 1, 0, 1), (1, 1), 1, shift,
                               np.int8))
    # fused activations (ReLU6-like clamps) and more pixels than one chunk (256) and one part
    x = _act(rng, False, (1, 3, 30, 29))
    wt = rng.integers(-128, 128, (37, 3, 3, 3)).astype(np.int8)
    cases.append(conv_case(x, wt, rng.integers(-5000, 5000, 37).astype(np.int64), (1, 1), (1, 1, 1, 1), (1, 1),
                           rng.integers(1, 1 << 10, 37), 14, np.uint8, lo=0, hi=96))
    # 1x1 stride 1 (the columns are slices of the input) and 1x1 stride 2
    x = _act(rng, True, (1, 29, 17, 19))
    wt = rng.integers(-128, 128, (19, 29, 1, 1)).astype(np.int8)
    cases.append(conv_case(x, wt, rng.integers(-999, 999, 19).astype(np.int64), (1, 1), (0, 0, 0, 0), (1, 1), 77, 13,
                           np.int8))
    cases.append(conv_case(x, wt, rng.integers(-999, 999, 19).astype(np.int64), (2, 2), (0, 0, 0, 0), (1, 1), 77, 13,
                           np.int8))
    # a longer K (3x3x128) and several channel blocks, 2 chunks of pixels
    x = _act(rng, True, (1, 128, 16, 17))
    wt = rng.integers(-128, 128, (41, 128, 3, 3)).astype(np.int8)
    cases.append(conv_case(x, wt, rng.integers(-(1 << 16), 1 << 16, 41).astype(np.int64), (1, 1), (1, 1, 1, 1),
                           (1, 1), rng.integers(1, 1 << 12, 41), 22, np.int8))
    # dense layers (as fast.VnniDense: 1x1 convolutions of the columns)
    for k, m, rows in ((5, 3, 1), (301, 17, 4), (4096, 10, 2)):
        x = rng.integers(-128, 128, (rows, k)).astype(np.int8)
        wt = rng.integers(-128, 128, (m, k)).astype(np.int8)
        cases.append(dense_case(x, wt, rng.integers(-1000, 1000, m).astype(np.int64), 3, 9, np.int8))
    # depthwise: odd channel counts, W strides 1, 2, 3, wide rows (vector body) and narrow ones (tails)
    for t, (kh, kw, strides, dil, pads, h, w) in enumerate((
            (3, 3, (1, 1), (1, 1), (1, 1, 1, 1), 9, 37), (3, 3, (2, 2), (1, 1), (1, 1, 1, 1), 10, 40),
            (5, 5, (1, 1), (2, 2), (4, 4, 4, 4), 11, 23), (3, 3, (1, 3), (1, 1), (0, 2, 0, 2), 7, 31),
            (1, 7, (2, 1), (1, 1), (0, 3, 0, 3), 6, 5), (7, 1, (1, 2), (1, 1), (3, 0, 3, 0), 12, 3),
            (2, 4, (1, 2), (1, 2), (2, 0, 1, 5), 5, 50), (1, 1, (1, 2), (1, 1), (0, 0, 0, 0), 3, 15))):
        c = (5, 7, 3, 9, 11, 1, 13, 3)[t]  # the last: a stride-2 vector load would end 1 byte past the input
        x = _act(rng, t % 2 == 1, (1, c, h, w))
        wt = rng.integers(-128, 128, (c, 1, kh, kw)).astype(np.int8)
        if t == 0:
            x[...] = -128 if x.dtype == np.int8 else 255
        bias = rng.integers(-(1 << 16), 1 << 16, c).astype(np.int64)
        cases.append(dw_case(x, wt, bias, strides, pads, dil, rng.integers(-(1 << 12), 1 << 12, c),
                             int(rng.integers(4, 20)), OUT_KINDS[t % 4]))
    return cases


CASES = _cases()


@pytest.fixture(scope="session")
def neon_runs(tmp_path_factory):
    """run(cpu, variant) -> (returncode, stderr, outputs per case (1 part, 3 parts)); the harness is
    compiled once and every (cpu, variant) runs once per session."""
    tmp = tmp_path_factory.mktemp("neon")
    exe = str(tmp / "harness")
    cmd = [CC, "-O3", "-static", "-Wall", "-Wno-unused-function", "-I", FIXED, HARNESS, "-o", exe]
    built = subprocess.run(cmd, check=False, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    cases = tmp / "cases.bin"
    cases.write_bytes(b"".join(c.record for c in CASES))
    done = {}

    def run(cpu, variant):
        if (cpu, variant) not in done:
            out = tmp / f"out-{cpu}-{variant}.bin"
            proc = subprocess.run([QEMU, "-cpu", cpu, exe, variant, str(cases), str(out)], check=False, capture_output=True,
                                  text=True, timeout=600)
            outputs = []
            if proc.returncode == 0:
                raw, at = out.read_bytes(), 0
                for c in CASES:
                    if c.kind == "dw" and variant == "c":
                        outputs.append(None)
                        continue
                    n = c.want.nbytes
                    outputs.append(tuple(np.frombuffer(raw[at + i * n:at + (i + 1) * n], c.want.dtype).reshape(
                        c.want.shape) for i in range(2)))
                    at += 2 * n
                assert at == len(raw)
            done[cpu, variant] = proc.returncode, proc.stderr, outputs
        return done[cpu, variant]

    return run


def _check(outputs, kinds=("conv", "dw")):
    checked = 0
    for i, (case, got) in enumerate(zip(CASES, outputs)):
        if case.kind not in kinds or got is None:
            continue
        for parts, g in zip((1, 3), got):
            assert np.array_equal(g, case.want), (i, case.kind, parts, np.argwhere(g != case.want)[:5])
        checked += 1
    return checked


@needs_cross
@pytest.mark.parametrize("variant", ("dot", "plain", "auto", "c"))
def test_conv_and_dense_equal_the_specification(neon_runs, variant):
    rc, err, outputs = neon_runs("max", variant)
    assert rc == 0, err
    assert _check(outputs, ("conv",)) == sum(c.kind == "conv" for c in CASES)


@needs_cross
def test_depthwise_equals_the_specification(neon_runs):
    rc, err, outputs = neon_runs("max", "auto")
    assert rc == 0, err
    assert _check(outputs, ("dw",)) == sum(c.kind == "dw" for c in CASES) > 5


@needs_cross
def test_run_time_choice_without_dotprod(neon_runs):
    """A Cortex-A72 (no SDOT): the forced SDOT variant refuses to run, the automatic choice takes
    plain NEON (an SDOT instruction would be an illegal instruction here) and is exact."""
    rc, err, _ = neon_runs("cortex-a72", "dot")
    assert rc == 3 and "no dotprod" in err
    rc, err, outputs = neon_runs("cortex-a72", "auto")
    assert rc == 0, err
    assert _check(outputs) == len(CASES)


def test_the_header_compiles_to_stubs_off_aarch64(tmp_path):
    """On this host's compiler (x86-64 here) igemm_neon.h has no NEON code: the harness builds and
    says the variant is not available."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no host C compiler")
    probe = subprocess.run([cc, "-dumpmachine"], check=False, capture_output=True, text=True).stdout
    if probe.startswith("aarch64"):
        pytest.skip("the host is aarch64")
    exe = str(tmp_path / "harness")
    built = subprocess.run([cc, "-O1", "-Wall", "-Wno-unused-function", "-I", FIXED, HARNESS, "-o", exe],
                           check=False, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    (tmp_path / "none.bin").write_bytes(b"")
    proc = subprocess.run([exe, "plain", str(tmp_path / "none.bin"), str(tmp_path / "out.bin")], check=False, capture_output=True,
                          text=True)
    assert proc.returncode == 3 and "not built for aarch64" in proc.stderr


@needs_cross
def test_the_extension_module_builds_for_aarch64(tmp_path):
    """_igemm.pyx (which wires igemm_neon.h into the ISA table) translated by Cython and compiled for
    aarch64 as setup.py builds it (baseline armv8-a, OpenMP): it compiles, and SDOT instructions sit in
    the SDOT kernel only (the plain NEON variant and everything else run on any aarch64 CPU).
    This host's Python headers stand in for aarch64's (both LP64, little-endian)."""
    import sys
    import sysconfig
    objdump = shutil.which("aarch64-linux-gnu-objdump")
    src = tmp_path / "_igemm.c"
    cy = subprocess.run([sys.executable, "-m", "cython", "-3", os.path.join(FIXED, "_igemm.pyx"), "-o", str(src)],
                        check=False, capture_output=True, text=True)
    assert cy.returncode == 0, cy.stderr
    obj = tmp_path / "_igemm.o"
    built = subprocess.run([CC, "-O1", "-fPIC", "-fopenmp", "-c", "-I", sysconfig.get_paths()["include"], "-I",
                            np.get_include(), "-I", FIXED, str(src), "-o", str(obj)], check=False, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    if objdump is None:
        return
    listing = subprocess.run([objdump, "-d", str(obj)], check=False, capture_output=True, text=True).stdout
    where, funcs = None, set()
    for line in listing.splitlines():
        if line.endswith(">:"):
            where = line.split("<", 1)[1][:-2]
        elif "\tsdot\t" in line:
            funcs.add(where)
    assert funcs == {"ign_conv_panels_dot"}
