"""Caffe ``.prototxt`` files: the protobuf text format read into a located AST.

:func:`parse_prototxt` / :func:`load_prototxt` read the text format into a
:class:`Message`: ordered :class:`Field` s whose values are ``int``,
``float``, ``str``, ``bool``, :class:`Enum` or a nested :class:`Message`,
each with its ``file:line:col``. Typed getters (``get_int`` ...) raise a
:class:`TidlcError` pointing at the offending field. The grammar is
``prototxt.lark``; this module is schema-free (no caffe.proto needed).
What the fields *mean* for a Caffe net (phases, inputs, V1 layer types,
conv/pool geometry) is :mod:`tidlc.frontends.caffe.netspec`.

Example::

    msg = load_prototxt("deploy.prototxt")
    for layer in msg.messages("layer"):
        print(layer.get_str("name"), layer.get_str("type"), layer.loc.where())
"""
from __future__ import annotations

import contextvars
import functools
import math
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Union

import attrs
import lark

from tidlc import fileio, limits
from tidlc.diagnostics import Loc, TidlcError

__all__ = [
    "Enum",
    "Field",
    "Message",
    "check_field",
    "field_str",
    "format_prototxt",
    "load_prototxt",
    "parse_prototxt",
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
        return check_field(f, isinstance(f.value, Message), "a message")

    def messages(self, name: str) -> list[Message]:
        """Every ``name { ... }`` sub-message, in order."""
        return [check_field(f, isinstance(f.value, Message), "a message")
                for f in self.fields_named(name)]

    # Typed getters: a missing field returns ``default`` or, without one,
    # raises "missing field"; a value of the wrong type raises at its location.
    def get_int(self, name: str, default: Any = _MISSING) -> int:
        return self._typed(name, default, _as_int)

    def get_float(self, name: str, default: Any = _MISSING) -> float:
        return self._typed(name, default, _as_float)

    def get_str(self, name: str, default: Any = _MISSING) -> str:
        return self._typed(name, default, field_str)

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
        return [field_str(f) for f in self.fields_named(name)]

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


def check_field(f: Field, ok: bool, expected: str) -> Any:
    if not ok:
        raise TidlcError(f"field '{f.name}' must be {expected}, got {_describe(f.value)}",
                         loc=f.loc)
    return f.value


def _as_int(f: Field) -> int:
    return check_field(f, isinstance(f.value, int) and not isinstance(f.value, bool), "an integer")


def _as_float(f: Field) -> float:
    v = f.value
    return float(check_field(f, isinstance(v, (int, float)) and not isinstance(v, bool), "a number"))


def field_str(f: Field) -> str:
    return check_field(f, isinstance(f.value, str), "a string")


_BOOL_WORDS = {"true": True, "True": True, "t": True, "false": False, "False": False, "f": False}


def _as_bool(f: Field) -> bool:
    v = f.value
    if isinstance(v, bool):
        return v
    if isinstance(v, Enum) and v.name in _BOOL_WORDS:
        return _BOOL_WORDS[v.name]
    return bool(check_field(f, isinstance(v, int) and v in (0, 1), "true or false"))


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
    # The builder is embedded: values are made as the LALR parser reduces, with no parse tree
    # and no recursion, however deep the (already depth-checked) messages nest.
    return lark.Lark.open("prototxt.lark", rel_to=__file__, parser="lalr", cache=True,
                          transformer=_Builder())


# The file the running parse reads (the embedded builder is shared by every parse).
_FILENAME: contextvars.ContextVar[str] = contextvars.ContextVar("prototxt_file", default="<string>")


_ESCAPES = {"n": b"\n", "t": b"\t", "r": b"\r", "a": b"\a", "b": b"\b", "f": b"\f",
            "v": b"\v", "\\": b"\\", "'": b"'", '"': b'"', "?": b"?"}
_ESCAPE = re.compile(r"\\(?:([0-7]{1,3})|[xX]([0-9a-fA-F]{1,2})"
                     r"|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|(.))")
_SPECIAL_FLOATS = {"inf": math.inf, "infinity": math.inf, "nan": math.nan}
_MAX_DIGITS = {8: 22, 10: 20, 16: 16}  # digits of 2**64 - 1 in each base


class _Builder(lark.Transformer):
    """Turns the parser's reductions into Field/Message values with locations."""

    def _loc(self, token: lark.Token, offset: int = 0) -> Loc:
        return Loc(file=_FILENAME.get(), line=token.line, col=token.column + offset)

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
            value: int | float = self._integer(token, text[2:], 16)
        elif any(c in text for c in ".eEfF"):
            value = float(text.rstrip("fF"))
        elif len(text) > 1 and text[0] == "0":
            if "8" in text or "9" in text:
                raise TidlcError(f"invalid octal number '{text}'", loc=self._loc(token),
                                 hint="a leading 0 means octal in protobuf text format")
            value = self._integer(token, text, 8)
        else:
            value = self._integer(token, text, 10)
        return -value if negative else value

    def _integer(self, token: lark.Token, digits: str, base: int) -> int:
        """An integer literal within protobuf's 64 bits (checked on the digits before int()
        converts them: Python refuses to convert very long decimal strings)."""
        digits = digits.lstrip("0") or "0"
        if len(digits) <= _MAX_DIGITS[base]:
            value = int(digits, base)
            if value < 1 << 64:
                return value
        shown = digits if len(digits) <= 24 else digits[:20] + "..."
        raise TidlcError(f"integer {shown} is out of the 64-bit range", loc=self._loc(token),
                         hint="protobuf integers have at most 64 bits; write a float as 1e20")

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
        # adjacent literals concatenate: each is within the limit (pre-scan), their sum may not be
        text = "".join(self._unescape(token) for token in children)
        limits.check("string", len(text.encode("utf-8", "surrogatepass")), "string",
                     self._loc(children[0]))
        return text

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


def _short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[:width] + "..."


def _got(token: lark.Token) -> str:
    if token.type == "$END":
        return "end of file"
    if token.type in ("NAME", "NUMBER", "STRING"):
        word = "identifier" if token.type == "NAME" else token.type.lower()
        value = _short(token.value)
        return f"{word} {value}" if token.type == "STRING" else f"{word} '{value}'"
    return f"'{token.value}'"


_SHOWN = 120  # characters of the offending line shown under an error


def _source_lines(text: str, line: int, col: int) -> list[str]:
    """The offending line (a window of it around ``col``) and a caret under ``col`` (tabs
    kept so the caret lines up). Lines end at newlines only, as the parser counts them."""
    if line < 1 or col < 1:
        return []
    start = 0
    for _ in range(line - 1):
        start = text.find("\n", start) + 1
        if not start:
            return []
    stop = text.find("\n", start)
    src = text[start:stop if stop >= 0 else len(text)].rstrip("\r")
    first = max(0, min(col - 1, len(src)) - _SHOWN // 2)
    shown = src[first:first + _SHOWN]
    prefix = "".join("\t" if c == "\t" else " " for c in shown[:col - 1 - first])
    return [("..." if first else "") + shown, ("   " if first else "") + prefix + "^"]


def _syntax_error(exc: lark.exceptions.UnexpectedInput, text: str, filename: str) -> TidlcError:
    hint = ""
    if isinstance(exc, lark.exceptions.UnexpectedCharacters):
        line, col = exc.line, exc.column
        char = text[exc.pos_in_stream:exc.pos_in_stream + 1]
        if char in ("\"", "'"):
            message = "unterminated string (a string must end on the line it starts)"
        else:
            word = _WORD.match(text, exc.pos_in_stream)
            message = f"{_expected(exc.allowed)}, got '{word.group() if word else char}'"
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
                      problems=_source_lines(text, line, col), code="syntax")


_WORD = re.compile(r"\S{1,24}")
# What the pre-scan looks at: strings (possibly unterminated), comments, and message brackets.
_SCAN = re.compile(r""""[^"\\\n]*+(?:\\.[^"\\\n]*+)*+"?"""  # double-quoted string
                   r"""|'[^'\\\n]*+(?:\\.[^'\\\n]*+)*+'?"""  # single-quoted string
                   r"""|#[^\n]*+|[{}<>]""")


def _prescan(text: str, filename: str) -> None:
    """Enforce the nesting and string limits before the parser runs (a hostile file may nest
    ten thousand braces or hold a gigabyte string); errors point at the offending character."""
    lim = limits.current()
    if text.count("{") + text.count("<") <= lim.nesting and len(text) <= lim.string:
        return  # nothing can be over a limit: skip the scan
    depth = 0
    for m in _SCAN.finditer(text):
        token = m.group()
        if token == "{" or token == "<":
            depth += 1
            if depth > lim.nesting:
                raise limits.exceeded("nesting", depth, "message nesting depth",
                                      _offset_loc(text, filename, m.start()))
        elif token == "}" or token == ">":
            depth = max(0, depth - 1)
        elif token[0] != "#" and len(token) - 2 > lim.string:
            raise limits.exceeded("string", len(token) - 2, "string",
                                  _offset_loc(text, filename, m.start()))


def _offset_loc(text: str, filename: str, offset: int) -> Loc:
    line_start = text.rfind("\n", 0, offset) + 1
    return Loc(file=filename, line=text.count("\n", 0, offset) + 1, col=offset - line_start + 1)


def parse_prototxt(text: str, filename: str = "<string>") -> Message:
    """Parse protobuf text format (Caffe prototxt) into a located :class:`Message`."""
    _prescan(text, filename)
    token = _FILENAME.set(filename)
    try:
        fields = _parser().parse(text)
    except lark.exceptions.UnexpectedInput as exc:
        raise _syntax_error(exc, text, filename) from None
    except TidlcError as error:  # from the builder (a bad number, escape or string)
        loc = error.loc if isinstance(error.loc, Loc) else Loc(file=filename)
        raise TidlcError(error.message, loc=loc, hint=error.hint,
                         code="syntax" if error.code == "error" else error.code,
                         problems=_source_lines(text, loc.line, loc.col)) from None
    finally:
        _FILENAME.reset(token)
    return Message(tuple(fields), Loc(file=filename, line=1, col=1))


_CONTROLS = bytes(b for b in range(32) if b not in (9, 10, 12, 13))


def _read_text(path: str | Path, what: str) -> str:
    """Read a text file; a binary file (e.g. a .caffemodel) is a clean error."""
    data = fileio.read_bytes(str(path), what)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    head = data[:65536]
    controls = len(head) - len(head.translate(None, _CONTROLS))
    if b"\0" in head or controls > len(head) // 100 or (text is None and controls):
        raise TidlcError(f"{what} is not a text file", loc=Loc(file=str(path)),
                         hint="binary weights (.caffemodel) go in the weights argument",
                         code="format")
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
