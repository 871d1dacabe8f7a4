"""Sparse constant tensors of a ``.tflite`` file: reading ``SparsityParameters`` and densifying.

A TFLite tensor may store its constant data sparsely (``Tensor.sparsity``,
slot 6 of the schema's ``Tensor`` table); its buffer then holds only the
stored values and its ``shape`` is the dense shape. The parameters
(``SparsityParameters``) are:

* ``traversal_order``: the order in which the dimensions are walked. Its first
  ``rank`` entries are a permutation of the tensor's dimensions (in their
  *blocked* sizes); then one entry ``rank + k`` per block dimension ``k``;
* ``block_map``: block dimension ``k`` splits dense dimension ``block_map[k]``
  into blocks of ``dense_size`` of that block level;
* ``dim_metadata``: one entry per level of the walk, ``DENSE`` (every index
  ``0 .. dense_size - 1``) or ``SPARSE_CSR`` (for the position ``p`` reached
  so far, the indices ``array_indices[array_segments[p] : array_segments[p + 1]]``).

Walking the levels in order and taking one stored value per complete index
tuple rebuilds the dense tensor (TFLite's ``FormatConverter::SparseToDense``);
:func:`densify` does it level by level with numpy, without recursion. Every
index, segment and size is checked, so a damaged file is an error, never an
out-of-range write. TFLite makes such tensors with
``converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]``; they are
read by a ``DENSIFY`` op, or directly by ``FULLY_CONNECTED`` (1x4 blocks).
"""
from __future__ import annotations

import attrs
import numpy as np

from tidlc import limits
from tidlc.diagnostics import Loc, TidlcError

from .flatbuf import FlatBufferError, Table, _target

DENSE, SPARSE_CSR = 0, 1
FORMATS = {DENSE: "DENSE", SPARSE_CSR: "SPARSE_CSR"}
# SparseIndexVector union: type code -> element type of the ``values`` vector (slot 0 of each table)
INDEX_TYPES = {1: np.int32, 2: np.uint16, 3: np.uint8}

_TENSOR_SPARSITY_SLOT = 6  # Tensor.sparsity
_SUBGRAPH_TENSORS_SLOT = 0  # SubGraph.tensors
_MODEL_SUBGRAPHS_SLOT = 2  # Model.subgraphs


class SparsityError(ValueError):
    """The sparsity parameters of a tensor are inconsistent (with each other, its shape or its data)."""


@attrs.define
class Level:
    """One ``DimensionMetadata``: a dense level (``dense_size``) or a CSR level (segments, indices)."""

    format: int
    dense_size: int
    segments: np.ndarray | None = None
    indices: np.ndarray | None = None


@attrs.define
class Sparsity:
    traversal_order: tuple[int, ...]
    block_map: tuple[int, ...]
    levels: list[Level]


def _index_vector(table: Table, type_slot: int, what: str) -> np.ndarray | None:
    kind = table.scalar(type_slot, "B", 0)
    if kind == 0:
        return None
    if kind not in INDEX_TYPES:
        raise FlatBufferError(f"{what} has index vector type {kind} (expected 1 Int32Vector, 2 Uint16Vector "
                              "or 3 Uint8Vector)", table.field_offset(type_slot))
    vector = table.table(type_slot + 1)
    if vector is None:
        raise FlatBufferError(f"{what} has index vector type {kind} but no vector", table.field_offset(type_slot))
    values = vector.numbers(0, INDEX_TYPES[kind])
    return np.zeros(0, np.int64) if values is None else values.astype(np.int64)


def read_sparsity(tensor: Table, name: str = "") -> Sparsity | None:
    """The ``SparsityParameters`` of one ``Tensor`` table (None: a dense tensor)."""
    table = tensor.table(_TENSOR_SPARSITY_SLOT)
    if table is None:
        return None
    order = table.numbers(0, np.int32)
    block_map = table.numbers(1, np.int32)
    levels = []
    for i, dm in enumerate(table.tables(2)):
        what = f"tensor '{name}': sparsity level {i}"
        fmt = dm.scalar(0, "b", DENSE)
        if fmt not in FORMATS:
            raise FlatBufferError(f"{what} has format {fmt} (expected 0 DENSE or 1 SPARSE_CSR)", dm.field_offset(0))
        level = Level(fmt, dm.scalar(1, "i", 0))
        if fmt == SPARSE_CSR:
            level.segments = _index_vector(dm, 2, f"{what} (array_segments)")
            level.indices = _index_vector(dm, 4, f"{what} (array_indices)")
            if level.segments is None or level.indices is None:
                raise FlatBufferError(f"{what} is SPARSE_CSR but lacks array_segments or array_indices",
                                      dm.pos)
        levels.append(level)
    return Sparsity(() if order is None else tuple(order.tolist()),
                    () if block_map is None else tuple(block_map.tolist()), levels)


def tensor_sparsity(model, index: int, path: str = "") -> Sparsity | None:
    """The sparsity parameters of tensor ``index`` of the main subgraph of a decoded
    :class:`~.schema.Model` (read from the file's bytes; the index was checked by ``read_model``);
    a malformed table is a TidlcError (code ``corrupt``) with its byte offset."""
    try:
        root = Table.root(model.buf)
        subgraph = Table(model.buf, _target(model.buf, root.vector_offset(_MODEL_SUBGRAPHS_SLOT, 0, 4)))
        tensor = Table(model.buf, _target(model.buf, subgraph.vector_offset(_SUBGRAPH_TENSORS_SLOT, index, 4)))
        return read_sparsity(tensor, model.tensors[index].name)
    except FlatBufferError as exc:
        raise TidlcError(f"corrupt TFLite model: {exc}", Loc(file=path, offset=exc.offset), code="corrupt",
                         hint="the file is truncated or damaged; convert the model again") from None


def _check(sp: Sparsity, shape: tuple[int, ...]) -> list[int]:
    """The size of every level of the walk; raises SparsityError for inconsistent parameters."""
    rank, nblocks = len(shape), len(sp.block_map)
    order = list(sp.traversal_order)
    if sorted(order[:rank]) != list(range(rank)) or sorted(order[rank:]) != list(range(rank, rank + nblocks)):
        raise SparsityError(f"traversal_order {tuple(order)} is not the {rank} dimensions followed by the "
                            f"{nblocks} block dimensions")
    if len(sp.levels) != len(order):
        raise SparsityError(f"{len(sp.levels)} dim_metadata entries for {len(order)} traversal levels")
    if len(set(sp.block_map)) != nblocks or any(not 0 <= d < rank for d in sp.block_map):
        raise SparsityError(f"block_map {sp.block_map} does not name distinct dimensions of a rank-{rank} tensor")
    block = {}
    for level, d in zip(sp.levels, order):
        if d >= rank:  # a block level: dense, its size is the block size
            if level.format != DENSE or level.dense_size <= 0:
                raise SparsityError(f"block dimension {d - rank} must be DENSE with a positive size")
            block[sp.block_map[d - rank]] = level.dense_size
    for d, size in block.items():
        if shape[d] % size:
            raise SparsityError(f"dimension {d} ({shape[d]}) is not a multiple of its block size {size}")
    sizes = [shape[d] // block.get(d, 1) if d < rank else sp.levels[i].dense_size for i, d in enumerate(order)]
    for i, (level, size) in enumerate(zip(sp.levels, sizes)):
        if level.format == DENSE and level.dense_size != size:
            raise SparsityError(f"level {i} is DENSE of size {level.dense_size}, but its dimension has {size}")
    return sizes


def densify(shape: tuple[int, ...], sp: Sparsity, values: np.ndarray) -> np.ndarray:
    """The dense tensor of ``shape`` whose stored ``values`` (in walk order) are laid out by ``sp``;
    every other element is zero. Raises SparsityError for inconsistent parameters or data."""
    shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in shape):
        raise SparsityError(f"the dense shape {shape} has unknown dimensions")
    sizes = _check(sp, shape)
    total = int(np.prod(shape, dtype=np.int64))
    rank = len(shape)
    position = np.zeros(1, np.int64)  # per partial index: where its next sparse level's segment starts
    columns: list[np.ndarray] = []  # per level: the index of every partial index tuple
    for i, (level, size) in enumerate(zip(sp.levels, sizes)):
        count = position.size
        if level.format == DENSE:
            if count * size > max(total, 1):
                raise SparsityError(f"level {i} would make {count * size} entries, more than the "
                                    f"{total} elements of the dense tensor")
            columns = [np.repeat(c, size) for c in columns]
            idx = np.tile(np.arange(size, dtype=np.int64), count)
            position = np.repeat(position * size, size) + idx
        else:
            seg, ind = level.segments, level.indices
            if count and (position.max() + 1 >= seg.size):
                raise SparsityError(f"level {i} has {seg.size} array_segments, too few for position "
                                    f"{int(position.max())}")
            if seg.size and (np.any(np.diff(seg) < 0) or seg[0] < 0 or seg[-1] > ind.size):
                raise SparsityError(f"level {i}: array_segments must rise from 0 to at most the "
                                    f"{ind.size} array_indices")
            if ind.size and (ind.min() < 0 or ind.max() >= size):
                raise SparsityError(f"level {i}: an array index is outside its dimension of size {size}")
            starts, ends = seg[position], seg[position + 1]
            lengths = ends - starts
            n = int(lengths.sum())
            if n > max(total, 1):
                raise SparsityError(f"level {i} has {n} entries, more than the {total} elements of the dense tensor")
            parent = np.repeat(np.arange(count), lengths)
            # the positions starts[p] .. ends[p] - 1 of every parent p, in order
            offsets = np.arange(n, dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            position = np.repeat(starts, lengths) + offsets
            columns = [c[parent] for c in columns]
            idx = ind[position]
        columns.append(idx)
    values = np.asarray(values).reshape(-1)
    if position.size != values.size:
        raise SparsityError(f"the walk gives {position.size} entries, but the buffer holds {values.size} values")
    index = [None] * rank
    for level, d in enumerate(sp.traversal_order[:rank]):
        index[d] = columns[level]
    for level in range(rank, len(sp.traversal_order)):
        k = sp.traversal_order[level] - rank
        d = sp.block_map[k]
        index[d] = index[d] * sizes[level] + columns[level]
    dense = np.zeros(shape, values.dtype)
    if values.size:
        dense[tuple(index)] = values
    return dense


def densify_tensor(model, tensor, sp: Sparsity, data, path: str = "") -> np.ndarray:
    """The dense numpy array of a sparse constant ``tensor`` (a :class:`~.schema.Tensor`) whose
    buffer bytes are ``data``; a TidlcError (code ``corrupt``) names the tensor when the
    parameters do not fit the tensor."""
    from tidlc.ir.types import numpy_dtype
    loc = Loc(tensor.name, path)
    if tensor.dtype is None:
        raise TidlcError(f"sparse tensor #{tensor.index} '{tensor.name}' has element type {tensor.type_name}, "
                         "which tidlc does not support", loc, code="unsupported")
    dtype = np.dtype(numpy_dtype(tensor.dtype)).newbyteorder("<")
    if len(data) % dtype.itemsize:
        raise TidlcError(f"sparse tensor #{tensor.index} '{tensor.name}': {len(data)} bytes is not a whole "
                         f"number of {tensor.type_name} values", loc, code="corrupt")
    limits.check_shape(tensor.shape, dtype.itemsize, f"sparse tensor '{tensor.name}'", loc)
    try:
        dense = densify(tensor.shape, sp, np.frombuffer(data, dtype=dtype))
    except SparsityError as exc:
        raise TidlcError(f"sparse tensor #{tensor.index} '{tensor.name}' (shape {tensor.shape}): {exc}", loc,
                         code="corrupt", hint="the model's sparsity parameters are damaged; convert it again") \
            from None
    return dense.astype(dtype.newbyteorder("="), copy=False)


__all__ = ["DENSE", "SPARSE_CSR", "Level", "Sparsity", "SparsityError", "densify", "densify_tensor",
           "read_sparsity", "tensor_sparsity"]
