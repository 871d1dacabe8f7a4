"""Caffe ``.prototxt`` files: a located AST, then a normalised net description.

Two layers, both schema-free (no caffe.proto needed):

* :func:`parse_prototxt` / :func:`load_prototxt` read the protobuf text format
  into a :class:`Message`: ordered :class:`Field` s whose values are ``int``,
  ``float``, ``str``, ``bool``, :class:`Enum` or a nested :class:`Message`,
  each with its ``file:line:col``. Typed getters (``get_int`` ...) raise a
  :class:`TidlcError` pointing at the offending field.
* :func:`load_netspec` / :class:`NetSpec` normalise a NetParameter: the net
  inputs in all their historical spellings, the layers of the TEST phase with
  V2 type names (legacy V1 ``layers { type: CONVOLUTION }`` included), and
  helpers that resolve convolution/pooling geometry (:func:`conv_params`,
  :func:`pool_params`).

Example::

    net = load_netspec("deploy.prototxt")
    for layer in net.layers:
        if layer.type == "Convolution":
            conv = conv_params(layer.param("convolution_param"))
            print(layer.name, conv.kernel, conv.stride, conv.pads, conv.group)
"""
from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Union

import attrs
import lark

from tidlc.diagnostics import Loc, TidlcError

__all__ = [
    "ELTWISE_OP",
    "LRN_NORM_REGION",
    "PHASE",
    "POOL_METHOD",
    "POOL_ROUND_MODE",
    "V1_LAYER_TYPES",
    "ConvParams",
    "Enum",
    "Field",
    "InputSpec",
    "LayerSpec",
    "Message",
    "NetSpec",
    "PoolParams",
    "conv_params",
    "format_prototxt",
    "load_netspec",
    "load_prototxt",
    "parse_netspec",
    "parse_prototxt",
    "pool_params",
    "v1_layer_type",
]

_MISSING: Any = object()


# ----------------------------------------------------------------------------- AST

@attrs.frozen
class Enum:
    """An identifier value (``pool: MAX``); resolve it with :meth:`Message.get_enum`."""

    name: str

    def __str__(self) -> str:
        return self.name


Value = Union[int, float, str, bool, Enum, "Message"]


@attrs.frozen
class Field:
    """One ``name: value`` entry. ``loc`` points at the field name (not part of equality)."""

    name: str
    value: Value
    loc: Loc = attrs.field(factory=Loc, eq=False, repr=False)


@attrs.frozen
class Message:
    """An ordered list of fields. Repeated fields simply occur several times.

    ``name`` is the field name this message is the value of (``""`` for the
    file itself) and ``loc`` where it starts; both are ignored by ``==``.
    """

    fields: tuple[Field, ...] = ()
    loc: Loc = attrs.field(factory=Loc, eq=False, repr=False)
    name: str = attrs.field(default="", eq=False, repr=False)

    def __iter__(self) -> Iterator[Field]:
        return iter(self.fields)

    def __len__(self) -> int:
        return len(self.fields)

    def __contains__(self, name: object) -> bool:
        return any(f.name == name for f in self.fields)

    def has(self, name: str) -> bool:
        """True if the field occurs at least once."""
        return name in self

    def names(self) -> list[str]:
        """Distinct field names, in order of first occurrence."""
        return list(dict.fromkeys(f.name for f in self.fields))

    def field(self, name: str) -> Field | None:
        """The last occurrence of ``name`` (protobuf: the last one wins), or None."""
        for f in reversed(self.fields):
            if f.name == name:
                return f
        return None

    def fields_named(self, name: str) -> list[Field]:
        """Every occurrence of ``name``, in order (with their locations)."""
        return [f for f in self.fields if f.name == name]

    def get(self, name: str, default: Any = None) -> Any:
        """Value of the last occurrence of ``name``, else ``default``."""
        f = self.field(name)
        return default if f is None else f.value

    def get_all(self, name: str) -> list[Any]:
        """Values of every occurrence of ``name`` (a repeated field), in order."""
        return [f.value for f in self.fields if f.name == name]

    def message(self, name: str) -> Message:
        """The last ``name { ... }`` sub-message; an empty Message if absent."""
        f = self.field(name)
        if f is None:
            return Message((), self.loc, name)
        return _check(f, isinstance(f.value, Message), "a message")

    def messages(self, name: str) -> list[Message]:
        """Every ``name { ... }`` sub-message, in order."""
        return [_check(f, isinstance(f.value, Message), "a message")
                for f in self.fields_named(name)]

    # Typed getters: a missing field returns ``default`` or, without one,
    # raises "missing field"; a value of the wrong type raises at its location.
    def get_int(self, name: str, default: Any = _MISSING) -> int:
        return self._typed(name, default, _as_int)

    def get_float(self, name: str, default: Any = _MISSING) -> float:
        return self._typed(name, default, _as_float)

    def get_str(self, name: str, default: Any = _MISSING) -> str:
        return self._typed(name, default, _as_str)

    def get_bool(self, name: str, default: Any = _MISSING) -> bool:
        """Accepts ``true``/``false`` (also ``True``, ``t``, ``f``) and 1/0, like protobuf."""
        return self._typed(name, default, _as_bool)

    def get_enum(self, name: str, values: Mapping[str, int], default: Any = _MISSING) -> str:
        """The enum's identifier, given as identifier (``MAX``) or number (``0``)."""
        return self._typed(name, default, lambda f: _as_enum(f, values))

    def get_ints(self, name: str) -> list[int]:
        """All occurrences of a repeated integer field (``dim: 1 dim: 3 ...``)."""
        return [_as_int(f) for f in self.fields_named(name)]

    def get_floats(self, name: str) -> list[float]:
        return [_as_float(f) for f in self.fields_named(name)]

    def get_strs(self, name: str) -> list[str]:
        return [_as_str(f) for f in self.fields_named(name)]

    def pair(self, name: str, default: Any = _MISSING) -> tuple[int, int]:
        """A 2-D (h, w) value given as ``name`` (1 or 2 values) or as
        ``<base>_h`` + ``<base>_w`` (base = ``name`` without ``_size``), as
        Caffe's kernel_size / pad / stride. Giving both forms is an error."""
        base = name.removesuffix("_size")
        fields = self.fields_named(name)
        h, w = self.field(base + "_h"), self.field(base + "_w")
        if fields and (h or w):
            raise TidlcError(f"give either '{name}' or '{base}_h'/'{base}_w', not both",
                             loc=fields[0].loc)
        if h or w:
            if not (h and w):
                raise TidlcError(f"'{base}_h' and '{base}_w' must be given together",
                                 loc=(h or w).loc)
            return _as_int(h), _as_int(w)
        if not fields:
            if default is _MISSING:
                raise self._missing(name)
            return (default, default) if isinstance(default, int) else tuple(default)
        values = [_as_int(f) for f in fields]
        if len(values) > 2:
            raise TidlcError(f"'{name}' has {len(values)} values; only 2-D (1 or 2 values) "
                             "is supported", loc=fields[2].loc)
        return (values[0], values[-1])

    def _typed(self, name: str, default: Any, convert) -> Any:
        f = self.field(name)
        if f is None:
            if default is _MISSING:
                raise self._missing(name)
            return default
        return convert(f)

    def _missing(self, name: str) -> TidlcError:
        where = f" in '{self.name}'" if self.name else ""
        return TidlcError(f"missing field '{name}'{where}", loc=self.loc)


def _describe(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Message):
        return "a message"
    if isinstance(value, Enum):
        return f"identifier {value.name}"
    if isinstance(value, str):
        return f"string {_quote(value)}"
    return f"number {value!r}"


def _check(f: Field, ok: bool, expected: str) -> Any:
    if not ok:
        raise TidlcError(f"field '{f.name}' must be {expected}, got {_describe(f.value)}",
                         loc=f.loc)
    return f.value


def _as_int(f: Field) -> int:
    return _check(f, isinstance(f.value, int) and not isinstance(f.value, bool), "an integer")


def _as_float(f: Field) -> float:
    v = f.value
    return float(_check(f, isinstance(v, (int, float)) and not isinstance(v, bool), "a number"))


def _as_str(f: Field) -> str:
    return _check(f, isinstance(f.value, str), "a string")


_BOOL_WORDS = {"true": True, "True": True, "t": True, "false": False, "False": False, "f": False}


def _as_bool(f: Field) -> bool:
    v = f.value
    if isinstance(v, bool):
        return v
    if isinstance(v, Enum) and v.name in _BOOL_WORDS:
        return _BOOL_WORDS[v.name]
    return bool(_check(f, isinstance(v, int) and v in (0, 1), "true or false"))


def _as_enum(f: Field, values: Mapping[str, int]) -> str:
    v = f.value
    choices = ", ".join(values)
    if isinstance(v, Enum) and v.name in values:
        return v.name
    if isinstance(v, int) and not isinstance(v, bool):
        for key, number in values.items():
            if number == v:
                return key
    raise TidlcError(f"field '{f.name}' must be one of {choices}, got {_describe(v)}", loc=f.loc)


# ----------------------------------------------------------------------------- parsing

@functools.cache
def _parser() -> lark.Lark:
    return lark.Lark.open("prototxt.lark", rel_to=__file__, parser="lalr",
                          propagate_positions=True, cache=True)


_ESCAPES = {"n": b"\n", "t": b"\t", "r": b"\r", "a": b"\a", "b": b"\b", "f": b"\f",
            "v": b"\v", "\\": b"\\", "'": b"'", '"': b'"', "?": b"?"}
_ESCAPE = re.compile(r"\\(?:([0-7]{1,3})|[xX]([0-9a-fA-F]{1,2})"
                     r"|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|(.))")
_SPECIAL_FLOATS = {"inf": math.inf, "infinity": math.inf, "nan": math.nan}


class _Builder(lark.Transformer):
    """Turns the lark tree into Field/Message values with locations."""

    def __init__(self, filename: str):
        super().__init__()
        self.filename = filename

    def _loc(self, token: lark.Token, offset: int = 0) -> Loc:
        return Loc(file=self.filename, line=token.line, col=token.column + offset)

    def start(self, children: list) -> list[Field]:
        return [f for group in children for f in group]

    def scalar_field(self, children: list) -> list[Field]:
        name, value = children
        return [Field(str(name), value, self._loc(name))]

    def message_field(self, children: list) -> list[Field]:
        name, msg = children
        loc = self._loc(name)
        return [Field(str(name), attrs.evolve(msg, loc=loc, name=str(name)), loc)]

    def list_field(self, children: list) -> list[Field]:
        name, *items = children
        loc = self._loc(name)
        return [Field(str(name), attrs.evolve(v, name=str(name)) if isinstance(v, Message)
                      else v, loc) for v in items if v is not None]

    def message(self, children: list) -> Message:
        brace, *groups = children
        return Message(tuple(f for group in groups for f in group), self._loc(brace))

    def number(self, children: list) -> int | float:
        token = children[-1]
        text, negative = str(token), len(children) == 2
        if text[:2] in ("0x", "0X"):
            value: int | float = int(text, 16)
        elif any(c in text for c in ".eEfF"):
            value = float(text.rstrip("fF"))
        elif len(text) > 1 and text[0] == "0":
            if "8" in text or "9" in text:
                raise TidlcError(f"invalid octal number '{text}'", loc=self._loc(token),
                                 hint="a leading 0 means octal in protobuf text format")
            value = int(text, 8)
        else:
            value = int(text)
        return -value if negative else value

    def ident(self, children: list) -> Value:
        token = children[-1]
        text = str(token)
        special = _SPECIAL_FLOATS.get(text.lower())
        if len(children) == 2:
            if special is None:
                raise TidlcError(f"expected a number after '-', got identifier {text}",
                                 loc=self._loc(children[0]))
            return -special
        if special is not None:
            return special
        if text in ("true", "True", "false", "False"):
            return text[0] in "tT"
        return Enum(text)

    def string(self, children: list) -> str:
        return "".join(self._unescape(token) for token in children)

    def _unescape(self, token: lark.Token) -> str:
        body = str(token)[1:-1]
        if "\\" not in body:
            return body
        out, last = bytearray(), 0  # escapes make bytes; the result must be UTF-8
        for m in _ESCAPE.finditer(body):
            out += body[last:m.start()].encode()
            last = m.end()
            octal, hex2, short_unicode, long_unicode, other = m.groups()
            unicode = short_unicode or long_unicode
            where = self._loc(token, m.start() + 1)
            if octal or hex2:
                code = int(octal, 8) if octal else int(hex2, 16)
                if code > 255:
                    raise TidlcError(f"octal escape '{m[0]}' is out of range", loc=where)
                out.append(code)
            elif unicode:
                if int(unicode, 16) > 0x10FFFF:
                    raise TidlcError(f"escape '{m[0]}' is not a Unicode code point", loc=where)
                out += chr(int(unicode, 16)).encode("utf-8", "surrogatepass")
            elif other in _ESCAPES:
                out += _ESCAPES[other]
            else:
                problem = "incomplete escape" if other in "xXuU" else "unknown escape sequence"
                raise TidlcError(f"{problem} '{m[0]}'", loc=where)
        out += body[last:].encode()
        try:
            return out.decode("utf-8")
        except UnicodeDecodeError:
            raise TidlcError("string is not valid UTF-8", loc=self._loc(token)) from None


_TOKEN_WORDS = {
    "NAME": "field name", "NUMBER": "number", "STRING": "string", "MINUS": "'-'",
    "COLON": "':'", "LBRACE": "'{'", "RBRACE": "'}'", "LANGLE": "'<'", "MORETHAN": "'>'",
    "LSQB": "'['", "RSQB": "']'", "COMMA": "','", "SEMICOLON": "';'", "$END": "end of file",
}


def _expected(names: set[str] | None) -> str:
    names = set(names or ())
    if {"NUMBER", "STRING"} <= names:  # value position: don't list every literal kind
        names -= {"NUMBER", "STRING", "NAME", "MINUS"}
        words = ["a value"] + sorted(_TOKEN_WORDS.get(n, n) for n in names)
    else:
        words = sorted(_TOKEN_WORDS.get(n, n) for n in names)
    if not words:
        return "unexpected input"
    alternatives = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]
    return f"expected {alternatives}"


def _got(token: lark.Token) -> str:
    if token.type == "$END":
        return "end of file"
    if token.type in ("NAME", "NUMBER", "STRING"):
        word = "identifier" if token.type == "NAME" else token.type.lower()
        return f"{word} {token.value}" if token.type == "STRING" else f"{word} '{token.value}'"
    return f"'{token.value}'"


def _source_lines(text: str, line: int, col: int) -> list[str]:
    """The offending line and a caret under ``col`` (tabs kept so the caret lines up)."""
    lines = text.splitlines()
    if not 1 <= line <= len(lines):
        return []
    src = lines[line - 1]
    prefix = "".join("\t" if c == "\t" else " " for c in src[:col - 1])
    return [src, prefix + "^"]


def _syntax_error(exc: lark.exceptions.UnexpectedInput, text: str, filename: str) -> TidlcError:
    hint = ""
    if isinstance(exc, lark.exceptions.UnexpectedCharacters):
        line, col = exc.line, exc.column
        char = text[exc.pos_in_stream]
        if char in "\"'":
            message = "unterminated string (a string must end on the line it starts)"
        else:
            word = text[exc.pos_in_stream:].split(None, 1)[0][:24]
            message = f"{_expected(exc.allowed)}, got '{word}'"
    else:
        token = getattr(exc, "token", None)
        if token is None or token.type == "$END":
            body = text.rstrip()
            line, col = body.count("\n") + 1, len(body) - (body.rfind("\n") + 1) + 1
            got = "end of file"
            if "RBRACE" in exc.expected or "MORETHAN" in exc.expected:
                hint = "a '{' or '<' is not closed"
        else:
            line, col, got = token.line, token.column, _got(token)
        expected = exc.expected
        if getattr(exc, "interactive_parser", None) is not None:
            # LALR tables merge look-aheads; ask the parser what it really accepts here.
            expected = exc.interactive_parser.accepts() or expected
        message = f"{_expected(expected)}, got {got}"
    return TidlcError(message, loc=Loc(file=filename, line=line, col=col), hint=hint,
                      problems=_source_lines(text, line, col))


def parse_prototxt(text: str, filename: str = "<string>") -> Message:
    """Parse protobuf text format (Caffe prototxt) into a located :class:`Message`."""
    try:
        tree = _parser().parse(text)
    except lark.exceptions.UnexpectedInput as exc:
        raise _syntax_error(exc, text, filename) from None
    try:
        fields = _Builder(filename).transform(tree)
    except lark.exceptions.VisitError as exc:
        error = exc.orig_exc
        if not isinstance(error, TidlcError):
            raise
        loc = error.loc
        raise TidlcError(error.message, loc=loc, hint=error.hint,
                         problems=_source_lines(text, loc.line, loc.col)) from None
    return Message(tuple(fields), Loc(file=filename, line=1, col=1))


def _read_text(path: str | Path, what: str) -> str:
    """Read a text file; a binary file (e.g. a .caffemodel) is a clean error."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TidlcError(f"cannot read {what}: {exc.strerror}", loc=Loc(file=str(path))) from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    head = data[:65536]
    controls = sum(b < 32 and b not in (9, 10, 12, 13) for b in head)
    if b"\0" in head or controls > len(head) // 100 or (text is None and controls):
        raise TidlcError(f"{what} is not a text file", loc=Loc(file=str(path)),
                         hint="binary weights (.caffemodel) go in the weights argument")
    # Non-UTF-8 bytes in an otherwise text file are legacy-encoded comments.
    return text if text is not None else data.decode("utf-8", "replace")


def load_prototxt(path: str | Path) -> Message:
    """Read and parse a .prototxt file (errors name the file, line and column)."""
    return parse_prototxt(_read_text(path, "prototxt"), str(path))


_QUOTE = {**{c: f"\\{c:03o}" for c in [*range(32), 127]},
          **{ord(k): v for k, v in {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t"}.items()}}


def _quote(s: str) -> str:
    return '"' + s.translate(_QUOTE) + '"'


def _format_value(v: Value) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return "nan" if math.isnan(v) else "-inf" if v < 0 else "inf"
        return repr(v)
    if isinstance(v, str):
        return _quote(v)
    return str(v)


def format_prototxt(message: Message, indent: str = "  ") -> str:
    """Print a Message back as text format; ``parse_prototxt`` of it gives an equal Message."""
    lines: list[str] = []

    def emit(msg: Message, depth: int) -> None:
        pad = indent * depth
        for f in msg:
            if isinstance(f.value, Message):
                lines.append(f"{pad}{f.name} {{")
                emit(f.value, depth + 1)
                lines.append(f"{pad}}}")
            else:
                lines.append(f"{pad}{f.name}: {_format_value(f.value)}")

    emit(message, 0)
    return "".join(line + "\n" for line in lines)


# ----------------------------------------------------------------------------- enums

# Verified against BVLC caffe.proto (V1LayerParameter.LayerType) and the V2 names
# from upgrade_proto.cpp (UpgradeV1LayerType): V1 identifier -> (number, V2 type).
V1_LAYER_TYPES: dict[str, tuple[int, str]] = {
    "NONE": (0, ""), "ACCURACY": (1, "Accuracy"), "BNLL": (2, "BNLL"), "CONCAT": (3, "Concat"),
    "CONVOLUTION": (4, "Convolution"), "DATA": (5, "Data"), "DROPOUT": (6, "Dropout"),
    "EUCLIDEAN_LOSS": (7, "EuclideanLoss"), "FLATTEN": (8, "Flatten"),
    "HDF5_DATA": (9, "HDF5Data"), "HDF5_OUTPUT": (10, "HDF5Output"), "IM2COL": (11, "Im2col"),
    "IMAGE_DATA": (12, "ImageData"), "INFOGAIN_LOSS": (13, "InfogainLoss"),
    "INNER_PRODUCT": (14, "InnerProduct"), "LRN": (15, "LRN"),
    "MULTINOMIAL_LOGISTIC_LOSS": (16, "MultinomialLogisticLoss"), "POOLING": (17, "Pooling"),
    "RELU": (18, "ReLU"), "SIGMOID": (19, "Sigmoid"), "SOFTMAX": (20, "Softmax"),
    "SOFTMAX_LOSS": (21, "SoftmaxWithLoss"), "SPLIT": (22, "Split"), "TANH": (23, "TanH"),
    "WINDOW_DATA": (24, "WindowData"), "ELTWISE": (25, "Eltwise"), "POWER": (26, "Power"),
    "SIGMOID_CROSS_ENTROPY_LOSS": (27, "SigmoidCrossEntropyLoss"),
    "HINGE_LOSS": (28, "HingeLoss"), "MEMORY_DATA": (29, "MemoryData"),
    "ARGMAX": (30, "ArgMax"), "THRESHOLD": (31, "Threshold"), "DUMMY_DATA": (32, "DummyData"),
    "SLICE": (33, "Slice"), "MVN": (34, "MVN"), "ABSVAL": (35, "AbsVal"),
    "SILENCE": (36, "Silence"), "CONTRASTIVE_LOSS": (37, "ContrastiveLoss"), "EXP": (38, "Exp"),
    "DECONVOLUTION": (39, "Deconvolution"),
}
_V1_BY_NUMBER = {number: v2 for number, v2 in V1_LAYER_TYPES.values()}

# caffe.proto enums the lowering needs most (identifier -> number).
PHASE = {"TRAIN": 0, "TEST": 1}
POOL_METHOD = {"MAX": 0, "AVE": 1, "STOCHASTIC": 2}
POOL_ROUND_MODE = {"CEIL": 0, "FLOOR": 1}
ELTWISE_OP = {"PROD": 0, "SUM": 1, "MAX": 2}
LRN_NORM_REGION = {"ACROSS_CHANNELS": 0, "WITHIN_CHANNEL": 1}


def v1_layer_type(value: str | int) -> str | None:
    """V2 type string for a V1 LayerType given by identifier or number; None if unknown."""
    if isinstance(value, str):
        entry = V1_LAYER_TYPES.get(value)
        return entry[1] if entry else None
    return _V1_BY_NUMBER.get(value)


# ----------------------------------------------------------------------------- net spec

@attrs.define(eq=False)
class InputSpec:
    """A net input: its blob name and shape (None when the file gives none)."""

    name: str
    shape: tuple[int, ...] | None
    loc: Loc


@attrs.define(eq=False)
class LayerSpec:
    """One layer in V2 terms. ``message`` is the raw layer message for anything else."""

    name: str
    type: str
    bottom: list[str]
    top: list[str]
    message: Message
    loc: Loc
    legacy: bool = False  # written as a V1 `layers { ... }` entry

    def param(self, name: str) -> Message:
        """A parameter sub-message (``"convolution_param"``); empty Message if absent."""
        return self.message.message(name)

    def has_param(self, name: str) -> bool:
        return self.message.has(name)


@attrs.define(eq=False)
class NetSpec:
    """A Caffe net for one phase: inputs, then layers in file order.

    ``Input`` layers become :class:`InputSpec` entries and are not repeated in
    ``layers``; layers that do not run in ``phase`` are dropped.
    """

    name: str
    inputs: list[InputSpec]
    layers: list[LayerSpec]
    message: Message
    phase: str = "TEST"

    def layer(self, name: str) -> LayerSpec:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise TidlcError(f"no layer named '{name}'", loc=self.message.loc)

    @classmethod
    def from_message(cls, message: Message, phase: str = "TEST", level: int = 0,
                     stages: tuple[str, ...] = ()) -> NetSpec:
        """Normalise a parsed NetParameter (see the class docstring)."""
        v2, v1 = message.fields_named("layer"), message.fields_named("layers")
        if v2 and v1:
            raise TidlcError("the net mixes 'layer' (V2) and 'layers' (V1) entries",
                             loc=v1[0].loc, hint="Caffe rejects this too; use one form")
        inputs = _net_inputs(message)
        layers = []
        for index, f in enumerate(v2 or v1):
            msg = _check(f, isinstance(f.value, Message), "a message")
            if not _included(msg, phase, level, stages):
                continue
            layer = _layer_spec(msg, f, index, legacy=bool(v1))
            if layer.type == "Input":
                inputs += _input_layer(layer)
            else:
                layers.append(layer)
        return cls(message.get_str("name", ""), inputs, layers, message, phase)


def parse_netspec(text: str, filename: str = "<string>", phase: str = "TEST") -> NetSpec:
    """Parse prototxt text straight to a :class:`NetSpec`."""
    return NetSpec.from_message(parse_prototxt(text, filename), phase)


def load_netspec(path: str | Path, phase: str = "TEST") -> NetSpec:
    """Read a .prototxt file straight to a :class:`NetSpec`."""
    return NetSpec.from_message(load_prototxt(path), phase)


def _layer_spec(msg: Message, f: Field, index: int, legacy: bool) -> LayerSpec:
    type_field = msg.field("type")
    if type_field is None:
        raise TidlcError("layer has no 'type'", loc=f.loc)
    raw = type_field.value
    if isinstance(raw, str):
        layer_type: str | None = raw.strip()
    elif isinstance(raw, Enum) or (isinstance(raw, int) and not isinstance(raw, bool)):
        layer_type = v1_layer_type(raw.name if isinstance(raw, Enum) else raw)
        if layer_type is None:
            raise TidlcError(f"unknown V1 layer type {raw}", loc=type_field.loc,
                             hint="V1 types are caffe.proto's V1LayerParameter.LayerType")
    else:
        layer_type = _check(type_field, False, "a string or a V1 layer type")
    if not layer_type:
        raise TidlcError("layer type is empty", loc=type_field.loc)
    name = msg.get_str("name", "") or f"{layer_type}_{index}"
    loc = attrs.evolve(f.loc, name=name)
    return LayerSpec(name, layer_type, msg.get_strs("bottom"), msg.get_strs("top"), msg, loc,
                     legacy)


def _rule_met(rule: Message, phase: str, level: int, stages: tuple[str, ...]) -> bool:
    """caffe::Net::StateMeetsRule for one NetStateRule."""
    if rule.has("phase") and rule.get_enum("phase", PHASE) != phase:
        return False
    if level < rule.get_int("min_level", level) or level > rule.get_int("max_level", level):
        return False
    if any(s not in stages for s in rule.get_strs("stage")):
        return False
    return not any(s in stages for s in rule.get_strs("not_stage"))


def _included(msg: Message, phase: str, level: int, stages: tuple[str, ...]) -> bool:
    includes, excludes = msg.messages("include"), msg.messages("exclude")
    if includes and excludes:
        raise TidlcError("a layer may have 'include' or 'exclude' rules, not both",
                         loc=msg.fields_named("exclude")[0].loc)
    # `phase:` on a layer is normally set by Caffe itself; written by hand it
    # means "only in this phase", so honour it like an include rule.
    if msg.has("phase") and msg.get_enum("phase", PHASE) != phase:
        return False
    if includes:
        return any(_rule_met(r, phase, level, stages) for r in includes)
    return not any(_rule_met(r, phase, level, stages) for r in excludes)


def _shape(msg: Message) -> tuple[int, ...]:
    """A BlobShape message: ``dim`` values (negative is an error)."""
    dims = msg.get_ints("dim")
    for f, d in zip(msg.fields_named("dim"), dims, strict=True):
        if d < 0:
            raise TidlcError(f"negative input dimension {d}", loc=f.loc)
    return tuple(dims)


def _net_inputs(net: Message) -> list[InputSpec]:
    """Top-level ``input:`` with ``input_shape {}`` or 4 x ``input_dim:`` each."""
    names = net.fields_named("input")
    shapes = [_shape(m) for m in net.messages("input_shape")]
    dim_fields = net.fields_named("input_dim")
    if dim_fields:
        if shapes:
            raise TidlcError("give 'input_shape' or 'input_dim', not both", loc=dim_fields[0].loc)
        dims = net.get_ints("input_dim")
        if len(dims) != 4 * len(names):
            raise TidlcError(f"{len(dims)} 'input_dim' values for {len(names)} input(s); "
                             "expected 4 per input", loc=dim_fields[0].loc)
        shapes = [tuple(dims[i:i + 4]) for i in range(0, len(dims), 4)]
    if shapes and len(shapes) != len(names):
        where = net.fields_named("input_shape") or dim_fields
        raise TidlcError(f"{len(shapes)} input shape(s) for {len(names)} input(s)",
                         loc=where[0].loc)
    return [InputSpec(_as_str(f), shapes[i] if shapes else None,
                      attrs.evolve(f.loc, name=_as_str(f))) for i, f in enumerate(names)]


def _input_layer(layer: LayerSpec) -> list[InputSpec]:
    """An ``Input`` layer: one shape per top, or one shape shared by all tops."""
    p = layer.param("input_param")
    shapes = [_shape(m) for m in p.messages("shape")]
    if len(shapes) not in (0, 1, len(layer.top)):
        raise TidlcError(f"Input layer has {len(layer.top)} tops but {len(shapes)} shapes",
                         loc=layer.loc)
    return [InputSpec(top, (shapes[i] if len(shapes) > 1 else shapes[0]) if shapes else None,
                      layer.loc) for i, top in enumerate(layer.top)]


# ----------------------------------------------------------------------------- geometry

def _pads(pad: tuple[int, int]) -> tuple[int, int, int, int]:
    return (pad[0], pad[1], pad[0], pad[1])


@attrs.frozen
class ConvParams:
    """convolution_param resolved to 2-D: every pair is (h, w)."""

    num_output: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int]
    dilation: tuple[int, int]
    group: int
    bias_term: bool
    axis: int

    @property
    def pads(self) -> tuple[int, int, int, int]:
        """(top, left, bottom, right); Caffe pads symmetrically."""
        return _pads(self.pad)


def conv_params(p: Message) -> ConvParams:
    """Resolve a Convolution/Deconvolution ``convolution_param`` (Caffe's defaults)."""
    params = ConvParams(
        num_output=p.get_int("num_output"), kernel=p.pair("kernel_size"),
        stride=p.pair("stride", 1), pad=p.pair("pad", 0), dilation=p.pair("dilation", 1),
        group=p.get_int("group", 1), bias_term=p.get_bool("bias_term", True),
        axis=p.get_int("axis", 1))
    for what in ("kernel", "stride", "dilation"):
        if min(getattr(params, what)) < 1:
            raise TidlcError(f"convolution {what} must be positive, got {getattr(params, what)}",
                             loc=p.loc)
    if min(params.pad) < 0:
        raise TidlcError(f"convolution pad must not be negative, got {params.pad}", loc=p.loc)
    if params.group < 1 or params.num_output % params.group:
        raise TidlcError(f"num_output {params.num_output} is not a multiple of group "
                         f"{params.group}", loc=p.loc)
    return params


@attrs.frozen
class PoolParams:
    """pooling_param resolved to 2-D. ``kernel`` is None for global pooling."""

    method: str  # "MAX", "AVE" or "STOCHASTIC"
    kernel: tuple[int, int] | None
    stride: tuple[int, int]
    pad: tuple[int, int]
    global_pooling: bool
    ceil_mode: bool  # Caffe rounds the output size up unless round_mode: FLOOR

    @property
    def pads(self) -> tuple[int, int, int, int]:
        return _pads(self.pad)


def pool_params(p: Message) -> PoolParams:
    """Resolve a Pooling ``pooling_param`` (with Caffe's checks on global pooling)."""
    global_pooling = p.get_bool("global_pooling", False)
    has_kernel = p.has("kernel_size") or p.has("kernel_h") or p.has("kernel_w")
    if global_pooling and has_kernel:
        raise TidlcError("global_pooling pools over the whole input; drop the kernel size",
                         loc=p.loc)
    kernel = None if global_pooling else p.pair("kernel_size")
    stride, pad = p.pair("stride", 1), p.pair("pad", 0)
    if global_pooling and (stride != (1, 1) or pad != (0, 0)):
        raise TidlcError("global_pooling requires stride 1 and pad 0", loc=p.loc)
    if kernel is not None and (min(kernel) < 1 or min(stride) < 1 or min(pad) < 0
                               or pad[0] >= kernel[0] or pad[1] >= kernel[1]):
        raise TidlcError(f"bad pooling window: kernel {kernel}, stride {stride}, pad {pad}",
                         loc=p.loc, hint="Caffe needs kernel >= 1, stride >= 1, pad < kernel")
    return PoolParams(p.get_enum("pool", POOL_METHOD, "MAX"), kernel, stride, pad,
                      global_pooling, p.get_enum("round_mode", POOL_ROUND_MODE, "CEIL") == "CEIL")
