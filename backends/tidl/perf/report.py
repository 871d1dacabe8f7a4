"""Rendering a :class:`PerfReport`: a per-layer table, totals, the frame-rate check and hints.

``render_text`` gives plain aligned text (pipes, files, tests); ``render_rich``
prints the same content as ``rich`` tables (terminals). ``plot`` draws the
per-layer cycles with matplotlib (imported only when asked for).
"""
from __future__ import annotations

import io

from tidlc.backends.tidl.perf.model import PerfReport

COLUMNS = ("#", "layer", "TIDL layer", "MACs", "cycles", "%", "MMA util", "bound", "DDR read", "DDR write", "out")
_RIGHT = {"#", "MACs", "cycles", "%", "MMA util", "DDR read", "DDR write"}
NAME_WIDTH = 36  # plot labels only: the tables show full names (MobileNet's differ at the end)


def _si(value: float, unit: str = "") -> str:
    """1234567 -> '1.23M'; keeps 3 significant digits."""
    value = float(value)
    for div, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= div:
            return f"{value / div:.3g}{prefix}{unit}"
    return f"{value:.3g}{unit}" if value else "0"


def _bytes(value: float) -> str:
    if not value:
        return "-"
    for div, prefix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if value >= div:
            return f"{value / div:.3g} {prefix}"
    return f"{value:.0f} B"


def _short(name: str) -> str:
    return name if len(name) <= NAME_WIDTH else name[: NAME_WIDTH - 1] + "~"


def layer_rows(rep: PerfReport, top: int | None = None) -> list[tuple[str, ...]]:
    layers = rep.layers
    if top:
        keep = {layer.index for layer in sorted(layers, key=lambda lay: -lay.cycles)[:top]}
        layers = [layer for layer in layers if layer.index in keep]
    rows = []
    for layer in layers:
        kind = layer.tidl_layer + (f" ({layer.note})" if layer.note in ("depthwise", "view", "folded") else "")
        rows.append((str(layer.index), layer.name, kind, _si(layer.macs) if layer.macs else "-",
                     f"{layer.cycles:,.0f}", f"{layer.percent:.1f}",
                     f"{100 * layer.mma_utilization:.1f}%" if layer.macs else "-", layer.bound,
                     _bytes(layer.ddr_read_bytes), _bytes(layer.ddr_write_bytes), layer.output_location))
    return rows


def header(rep: PerfReport) -> str:
    o, d = rep.options, rep.device
    msmc = d.msmc_kb if o.msmc_kb is None else o.msmc_kb
    bits = f"{o.bits}-bit" + (f" ({len(o.layers_16bit)} layers 16-bit)" if o.layers_16bit else "")
    return (f"{rep.model} on {d.name} (C7x {d.c7x_mhz:.0f} MHz, MMA {rep.peak_macs} MAC/cycle at {bits}), "
            f"numBatches {o.batches}, msmcSize {msmc} KB, weight persistence {'on' if o.persist_weights else 'off'}")


def summary_lines(rep: PerfReport) -> list[str]:
    per = "frame" if rep.options.batches == 1 else f"frame ({rep.batch_cycles / 1e6:.3f} Mcycles per call of {rep.options.batches})"
    fps_at = rep.fps_check.fps if rep.fps_check and rep.fps_check.keeps_up else rep.fps
    lines = [
        f"total      {rep.total_cycles / 1e6:.3f} Mcycles per {per} = {rep.ms:.3f} ms = {rep.fps:.1f} fps",
        (f"MACs       {rep.macs / 1e9:.3f} G; MAC utilisation {100 * rep.mac_utilization:.1f} % of "
         f"{rep.peak_macs} MAC/cycle (MMA bound {rep.mma_bound_cycles / 1e6:.3f} Mcycles)"),
        (f"DDR        {rep.ddr_bytes_per_frame / 1e6:.2f} MB/frame (read {rep.ddr_read_bytes / 1e6:.2f}, write "
         f"{rep.ddr_write_bytes / 1e6:.2f}) = {rep.ddr_gbps(fps_at):.2f} GB/s at {fps_at:.1f} fps"),
        (f"memory     weights {rep.weight_bytes / 1e6:.2f} MB ({rep.persistent_weight_bytes / 1e6:.2f} MB "
         f"persistent in MSMC); feature maps in MSMC up to {rep.msmc_feature_bytes / 1024:.0f} KB, "
         f"{rep.spilled_tensors} spilled to DDR"),
        (f"alignment  width padding {100 * rep.width_waste_cycles / rep.total_cycles:.1f} %, channel panels "
         f"{100 * rep.channel_waste_cycles / rep.total_cycles:.1f} % of the frame") if rep.total_cycles else "",
    ]
    if rep.fps_check:
        c = rep.fps_check
        if c.keeps_up:
            lines.append(f"video      keeps up with {c.fps:g} fps: {rep.ms:.3f} ms of the {c.budget_ms:.3f} ms frame budget "
                         f"({100 * c.load:.1f} % of the C7x, {c.budget_ms - rep.ms:.3f} ms to spare, "
                         f"{c.budget_ms / rep.ms:.1f}x headroom)")
        else:
            lines.append(f"video      does NOT keep up with {c.fps:g} fps: {rep.ms:.3f} ms per frame against a "
                         f"{c.budget_ms:.3f} ms budget ({100 * (c.load - 1):.0f} % too slow; reaches {rep.fps:.1f} fps)")
    return [line for line in lines if line]


def hint_lines(rep: PerfReport) -> list[str]:
    if not rep.hints:
        return []
    lines = ["hints (largest predicted gain per frame first; ~ = rough share):"]
    for i, h in enumerate(rep.hints, 1):
        gain_ms = rep.device.cycles_to_ms(h.gain_cycles)
        share = 100 * h.gain_cycles / rep.total_cycles if rep.total_cycles else 0
        mark = "" if h.exact else "~"
        lines.append(f"{i:2d}. {mark}-{gain_ms:.3f} ms ({mark}{share:.1f} %) [{h.kind}] {h.message}")
    return lines


def render_text(rep: PerfReport, top: int | None = None) -> str:
    rows = [COLUMNS] + layer_rows(rep, top)
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    out = [header(rep), ""]
    for n, row in enumerate(rows):
        cells = [cell.rjust(w) if COLUMNS[i] in _RIGHT else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    out.append("")
    out += summary_lines(rep)
    hints = hint_lines(rep)
    if hints:
        out += [""] + hints
    return "\n".join(out) + "\n"


def render_rich(rep: PerfReport, top: int | None = None, width: int | None = None) -> str:
    """The report as rich tables (ANSI text)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=width or 160, highlight=False)
    table = Table(title=Text(header(rep)), title_justify="left", show_lines=False)
    for col in COLUMNS:
        table.add_column(col, justify="right" if col in _RIGHT else "left", no_wrap=col != "layer")
    for row in layer_rows(rep, top):
        style = {"dma": "yellow", "setup": "dim"}.get(row[7])
        table.add_row(*(Text(cell) for cell in row), style=style)
    console.print(table)
    for line in summary_lines(rep):
        label, _, rest = line.partition(" ")
        text = Text(label.ljust(11), style="bold")
        text.append(rest.strip(), style="bold red" if "NOT keep up" in line else
                    "green" if "keeps up" in line else None)
        console.print(text)
    hints = hint_lines(rep)
    if hints:
        console.print(Text(hints[0], style="bold"))
        for line in hints[1:]:
            console.print(Text(line))  # Text: hint messages contain [brackets], not markup
    return buffer.getvalue()


def plot(rep: PerfReport, path: str, top: int = 40) -> str:
    """A bar chart of the heaviest layers' cycles (compute / DMA / setup) saved to ``path``."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from tidlc.diagnostics import TidlcError
        raise TidlcError("--plot needs matplotlib", hint='pip install "tidlc[plot]"') from None
    layers = sorted((lay for lay in rep.layers if lay.unit != "none"), key=lambda lay: -lay.cycles)[:top][::-1]
    names = [_short(lay.name) for lay in layers]
    busy = [lay.cycles - lay.setup_cycles for lay in layers]
    setup = [lay.setup_cycles for lay in layers]
    colors = ["tab:blue" if lay.bound == "compute" else "tab:orange" if lay.bound == "dma" else "tab:gray"
              for lay in layers]
    fig, ax = plt.subplots(figsize=(10, max(3.0, 0.25 * len(layers) + 1.5)))
    ax.barh(names, busy, color=colors, label="compute or DMA (blue: compute-bound, orange: DMA-bound)")
    ax.barh(names, setup, left=busy, color="lightgray", label="layer setup")
    ax.set_xlabel("cycles per frame")
    ax.set_title(f"{rep.model} on {rep.device.name}: {rep.ms:.3f} ms/frame, {rep.fps:.0f} fps "
                 f"(top {len(layers)} layers)")
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    from tidlc.fileio import atomic_write
    fmt = path.rsplit(".", 1)[-1].lower() if "." in path else "png"
    with atomic_write(path) as fh:  # metadata without dates: same report, same bytes
        fig.savefig(fh, format=fmt, dpi=100, metadata={"Software": None} if fmt == "png" else None)
    plt.close(fig)
    return path
