"""Column layout of the integer tables the cycle kernel reads and writes.

Both implementations of the kernel (``_cycles.pyx`` and its twin
``reference.py``) index their tables with these constants; a test checks that
the compiled module agrees (``_cycles.column_layout()``).

Everything is ``int64``: rates are stored as "per 1000 cycles" and costs as
"milli-operations" so that the two implementations compute the same integers
bit for bit (no floating point, no FMA contraction, no rounding differences).
"""
from __future__ import annotations

# --- layer kinds ---------------------------------------------------------------
KIND_NONE = 0  # no work of its own (reshape, flatten, ...: aliases its input buffer)
KIND_MMA = 1  # matrix multiply on the MMA (conv, deconv, inner product)
KIND_VEC = 2  # C7x vector unit (depthwise conv, pooling, eltwise, activations, copies)

# --- layer table: one row per TIDL layer, per frame --------------------------
L_KIND = 0
L_ROWS = 1  # MMA: output rows (N * H); VEC: rows of one plane (H)
L_W = 2  # output width (elements of a row)
L_ALIGN = 3  # width alignment of a row in elements (8, 16 for stride 2, 1 for inner product)
L_K = 4  # MMA: reduction length per output (kH*kW*Cin/groups, + 1 for the bias row)
L_COUT_G = 5  # MMA: output channels per group
L_GROUPS = 6  # MMA: groups
L_PLANES = 7  # VEC: independent planes (N * C)
L_OPS = 8  # VEC: vector instructions per output vector, in milli-ops
L_ELEM = 9  # bytes per element (1: 8-bit, 2: 16-bit)
L_WBYTES = 10  # weight (+ bias, scale) bytes
L_COLS = 11

# --- tensor table: one row per feature-map buffer ------------------------------
T_BYTES = 0  # bytes per frame
T_FIRST = 1  # producing layer (-1: a network input)
T_LAST = 2  # last reading layer (>= T_FIRST)
T_PINNED = 3  # 1: lives in DDR whatever the plan says (network inputs and outputs)
T_COLS = 4

# --- parameters ----------------------------------------------------------------
P_BATCHES = 0  # frames processed together (numBatches)
P_MMA_PANEL_BYTES = 1  # MMA panel width in bytes (64: 64x64 8-bit, 32x32 16-bit)
P_MMA_BLOCK = 2  # output pixels streamed per weight-panel load (one MMA loop)
P_MMA_LOOP_OH = 3  # cycles lost per MMA loop (drain, loop setup)
P_VEC_BYTES = 4  # C7x vector width in bytes
P_VEC_RATE = 5  # vector instructions per 1000 cycles
P_L2_POOL = 6  # L2 bytes that can hold whole feature maps between layers
P_L2_WORK = 7  # L2 bytes for a layer's working tiles (inputs, outputs, weights)
P_MSMC_POOL = 8  # MSMC bytes for feature maps and persistent weights
P_PERSIST = 9  # 1: weights that fit stay in MSMC (loaded once at init)
P_DDR_RATE = 10  # DDR bytes per 1000 cycles (effective)
P_MSMC_RATE = 11  # MSMC <-> L2 bytes per 1000 cycles (effective)
P_LAYER_SETUP = 12  # fixed cycles per layer (TIDL LayerSetupCycles + DMA pipe-up/down)
P_COUNT = 13

# --- results: one row per layer, per batch of P_BATCHES frames -----------------
R_COMPUTE = 0  # MMA or vector cycles
R_DMA = 1  # DMA cycles (DDR + MSMC traffic)
R_SETUP = 2  # fixed cycles
R_CYCLES = 3  # max(compute, dma) + setup
R_DDR_READ = 4  # DDR bytes read (features + weights + refetches)
R_DDR_WRITE = 5  # DDR bytes written
R_MSMC_BYTES = 6  # MSMC <-> L2 bytes moved
R_OUT_LOC = 7  # where the (first) output lives: LOC_*; -1: no output of its own
R_W_LOC = 8  # where the weights live: LOC_*; -1: no weights
R_COLS = 9

# --- locations -----------------------------------------------------------------
LOC_L2 = 0
LOC_MSMC = 1
LOC_DDR = 2
LOC_NAMES = ("L2", "MSMC", "DDR")


def layout() -> dict[str, int]:
    """Every constant above, for the compiled kernel's agreement test."""
    return {k: v for k, v in globals().items() if k[:2] in ("L_", "T_", "P_", "R_") or
            k.startswith(("KIND_", "LOC_")) and isinstance(v, int)}
