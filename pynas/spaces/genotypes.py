"""Discrete architectures (genotypes) of the DARTS and NAS-Bench-201 cell spaces.

``DartsGenotype`` uses the notation of DARTS (Liu et al., ICLR 2019): per cell
type a list of ``(op, input)`` pairs, two per intermediate node, where input 0
and 1 are the outputs of the previous two cells and input ``k >= 2`` is
intermediate node ``k - 2``; ``*_concat`` lists the states concatenated into
the cell output. ``str()`` prints it the way DARTS's code prints its
``Genotype`` namedtuple, and ``DartsGenotype.parse`` reads that text back
(``range(2, 6)`` or a list for the concat fields) without ``eval``.

``NB201Genotype`` is one op per edge of NAS-Bench-201's 4-node cell (Dong &
Yang, ICLR 2020), in the order of its arch strings
``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``.

Both serialise to JSON with a ``"space"`` tag; ``load_genotype`` reads either.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Sequence, Tuple, Union

from pynas.spaces.darts_ops import PRIMITIVES as DARTS_PRIMITIVES
from pynas.spaces.nb201_ops import PRIMITIVES as NB201_PRIMITIVES

__all__ = [
    "DartsGenotype",
    "NB201Genotype",
    "NB201_EDGES",
    "DARTS_V1",
    "DARTS_V2",
    "PC_DARTS",
    "genotype_from_json",
    "load_genotype",
]

PathLike = Union[str, Path]
DARTS_OPS = DARTS_PRIMITIVES[1:]  # a derived cell never holds 'none'
_DARTS_FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat")


# ---------------------------------------------------------------------------
# A tiny literal parser for DARTS's genotype notation
# ---------------------------------------------------------------------------
_TOKEN = re.compile(r"\s*(?:(?P<int>-?\d+)|(?P<name>[A-Za-z_]\w*)|(?P<str>'[^'\\\n]*'|\"[^\"\\\n]*\")"
                    r"|(?P<punct>[()\[\],=]))")


def _tokenize(text: str) -> List[Tuple[str, Any, int]]:
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ValueError(f"cannot parse genotype: unexpected {text[pos:].lstrip()[:20]!r} at character {pos}")
        kind = m.lastgroup
        raw = m.group(kind)
        value = int(raw) if kind == "int" else raw[1:-1] if kind == "str" else raw
        tokens.append((kind, value, m.start(kind)))
        pos = m.end()
    tokens.append(("end", None, len(text)))
    return tokens


_KIND_NAMES = {"int": "an integer", "name": "a name", "str": "a quoted string", "end": "end of text"}


class _Parser:
    """Recursive descent over: call := NAME '(' [arg {',' arg} [',']] ')'; arg := [NAME '='] value;
    value := INT | STR | list | tuple | 'range' '(' INT [',' INT] ')'."""

    def __init__(self, text: str):
        self.tokens = _tokenize(text)
        self.i = 0

    def peek(self, offset: int = 0) -> Tuple[str, Any, int]:
        return self.tokens[min(self.i + offset, len(self.tokens) - 1)]

    def take(self, kind: str, value: Any = None) -> Any:
        tok_kind, tok_value, pos = self.peek()
        if tok_kind != kind or (value is not None and tok_value != value):
            want = repr(value) if value is not None else _KIND_NAMES[kind]
            self.fail(f"expected {want}")
        self.i += 1
        return tok_value

    def fail(self, what: str) -> None:
        tok_kind, tok_value, pos = self.peek()
        got = "end of text" if tok_kind == "end" else repr(tok_value)
        raise ValueError(f"cannot parse genotype: {what} at character {pos}, got {got}")

    def at(self, kind: str, value: Any = None) -> bool:
        tok_kind, tok_value, _ = self.peek()
        return tok_kind == kind and (value is None or tok_value == value)

    def genotype_args(self) -> dict:
        name = self.take("name")
        if name not in ("Genotype", "DartsGenotype"):
            raise ValueError(f"cannot parse genotype: expected 'Genotype(...)', got {name!r}")
        self.take("punct", "(")
        args: dict = {}
        positional, keyword_seen = 0, False
        while not self.at("punct", ")"):
            if self.at("name") and self.peek(1)[:2] == ("punct", "="):
                key = self.take("name")
                self.take("punct", "=")
                if key not in _DARTS_FIELDS:
                    raise ValueError(f"cannot parse genotype: unknown field {key!r}; "
                                     f"fields: {', '.join(_DARTS_FIELDS)}")
                keyword_seen = True
            else:
                if keyword_seen or positional >= len(_DARTS_FIELDS):
                    raise ValueError("cannot parse genotype: positional fields must come first, at most 4")
                key = _DARTS_FIELDS[positional]
                positional += 1
            if key in args:
                raise ValueError(f"cannot parse genotype: field {key!r} given twice")
            args[key] = self.value()
            if not self.at("punct", ")"):
                self.take("punct", ",")
        self.take("punct", ")")
        self.take("end")
        missing = [f for f in _DARTS_FIELDS if f not in args]
        if missing:
            raise ValueError(f"cannot parse genotype: missing field(s) {', '.join(missing)}")
        return args

    def value(self) -> Any:
        kind, value, _ = self.peek()
        if kind in ("int", "str"):
            self.i += 1
            return value
        if kind == "name" and value == "range":
            self.i += 1
            self.take("punct", "(")
            bounds = [self.take("int")]
            if self.at("punct", ","):
                self.take("punct", ",")
                bounds.append(self.take("int"))
            self.take("punct", ")")
            return list(range(*bounds))
        if kind == "punct" and value in "[(":
            close = "]" if value == "[" else ")"
            self.i += 1
            items, trailing_comma = [], False
            while not self.at("punct", close):
                items.append(self.value())
                trailing_comma = self.at("punct", ",")
                if not trailing_comma:
                    break
                self.take("punct", ",")
            self.take("punct", close)
            if close == ")" and len(items) == 1 and not trailing_comma:
                return items[0]  # a parenthesised value, not a tuple
            return items if close == "]" else tuple(items)
        self.fail("expected a value (int, 'string', [list], (tuple) or range(a, b))")


# ---------------------------------------------------------------------------
# DARTS
# ---------------------------------------------------------------------------
def _as_cell(field: str, value: Any) -> Tuple[Tuple[str, int], ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"DartsGenotype.{field} must be a sequence of (op, input) pairs, got {value!r}")
    if len(value) == 0 or len(value) % 2:
        raise ValueError(f"DartsGenotype.{field} needs two (op, input) pairs per node, got {len(value)} pairs")
    cell = []
    for k, pair in enumerate(value):
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise ValueError(f"DartsGenotype.{field}[{k}] must be an (op, input) pair, got {pair!r}")
        op, index = pair
        if op not in DARTS_OPS:
            raise ValueError(f"DartsGenotype.{field}[{k}]: unknown op {op!r}; expected one of {', '.join(DARTS_OPS)}")
        if isinstance(index, bool) or not isinstance(index, int):
            raise ValueError(f"DartsGenotype.{field}[{k}]: input index must be an int, got {index!r}")
        node = k // 2
        if not 0 <= index <= node + 1:
            raise ValueError(f"DartsGenotype.{field}[{k}]: node {node} may read inputs 0..{node + 1}, got {index}")
        cell.append((op, index))
    return tuple(cell)


def _as_concat(field: str, value: Any, num_nodes: int) -> Tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, range)):
        raise ValueError(f"DartsGenotype.{field} must be a sequence of state indices, got {value!r}")
    concat = tuple(value)
    if not concat:
        raise ValueError(f"DartsGenotype.{field} is empty")
    for s in concat:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= num_nodes + 1:
            raise ValueError(f"DartsGenotype.{field}: states are 0..{num_nodes + 1} for {num_nodes} nodes, got {s!r}")
    if len(set(concat)) != len(concat):
        raise ValueError(f"DartsGenotype.{field} repeats a state: {list(concat)}")
    return concat


@dataclass(frozen=True)
class DartsGenotype:
    """A DARTS cell pair. Lists and ``range`` are accepted and stored as tuples."""

    normal: Tuple[Tuple[str, int], ...]
    normal_concat: Tuple[int, ...]
    reduce: Tuple[Tuple[str, int], ...]
    reduce_concat: Tuple[int, ...]

    def __post_init__(self) -> None:
        normal = _as_cell("normal", self.normal)
        reduce = _as_cell("reduce", self.reduce)
        object.__setattr__(self, "normal", normal)
        object.__setattr__(self, "reduce", reduce)
        object.__setattr__(self, "normal_concat", _as_concat("normal_concat", self.normal_concat, len(normal) // 2))
        object.__setattr__(self, "reduce_concat", _as_concat("reduce_concat", self.reduce_concat, len(reduce) // 2))

    def __str__(self) -> str:
        return (f"Genotype(normal={list(self.normal)!r}, normal_concat={list(self.normal_concat)!r}, "
                f"reduce={list(self.reduce)!r}, reduce_concat={list(self.reduce_concat)!r})")

    @classmethod
    def parse(cls, text: str) -> "DartsGenotype":
        """Read DARTS's printed notation, e.g. ``Genotype(normal=[('sep_conv_3x3', 0), ...],
        normal_concat=range(2, 6), ...)``; keyword or positional fields, lists or tuples."""
        if not isinstance(text, str):
            raise TypeError(f"DartsGenotype.parse takes a str, got {type(text).__name__}")
        return cls(**_Parser(text).genotype_args())

    def to_json(self) -> dict:
        return {
            "space": "darts",
            "normal": [list(p) for p in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [list(p) for p in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }

    @classmethod
    def from_json(cls, data: Union[dict, str]) -> "DartsGenotype":
        data = json.loads(data) if isinstance(data, str) else data
        _check_space_tag(data, "darts")
        missing = [f for f in _DARTS_FIELDS if f not in data]
        if missing:
            raise ValueError(f"DARTS genotype JSON lacks field(s) {', '.join(missing)}")
        return cls(**{f: data[f] for f in _DARTS_FIELDS})

    def save(self, path: PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: PathLike) -> "DartsGenotype":
        return cls.from_json(Path(path).read_text())


# ---------------------------------------------------------------------------
# NAS-Bench-201
# ---------------------------------------------------------------------------
# (to node, from node) of each edge, in arch-string order.
NB201_EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))


@dataclass(frozen=True)
class NB201Genotype:
    """One op name per edge, in ``NB201_EDGES`` order."""

    edges: Tuple[str, ...]

    def __post_init__(self) -> None:
        if isinstance(self.edges, (str, bytes)) or not isinstance(self.edges, Sequence):
            raise ValueError(f"NB201Genotype.edges must be a sequence of 6 op names, got {self.edges!r}")
        edges = tuple(self.edges)
        if len(edges) != len(NB201_EDGES):
            raise ValueError(f"NB201Genotype needs {len(NB201_EDGES)} edges, got {len(edges)}")
        for (to, frm), op in zip(NB201_EDGES, edges):
            if op not in NB201_PRIMITIVES:
                raise ValueError(f"NB201Genotype edge {to}<-{frm}: unknown op {op!r}; "
                                 f"expected one of {', '.join(NB201_PRIMITIVES)}")
        object.__setattr__(self, "edges", edges)

    def to_arch_str(self) -> str:
        groups = []
        for node in (1, 2, 3):
            entries = [f"{op}~{frm}" for (to, frm), op in zip(NB201_EDGES, self.edges) if to == node]
            groups.append("|" + "|".join(entries) + "|")
        return "+".join(groups)

    __str__ = to_arch_str

    @classmethod
    def from_arch_str(cls, text: str) -> "NB201Genotype":
        """Parse the full 6-edge form; a node's entries may come in any input order."""
        if not isinstance(text, str):
            raise TypeError(f"NB201Genotype.from_arch_str takes a str, got {type(text).__name__}")
        groups = text.strip().split("+")
        if len(groups) != 3:
            raise ValueError(f"arch string {text!r}: expected 3 '+'-separated node groups, got {len(groups)}")
        ops = {}
        for node, group in enumerate(groups, start=1):
            if len(group) < 2 or not (group.startswith("|") and group.endswith("|")):
                raise ValueError(f"arch string node {node} group {group!r}: must look like '|op~i|...|'")
            entries = group[1:-1].split("|")
            if len(entries) != node:
                raise ValueError(f"arch string node {node} group {group!r}: "
                                 f"expected {node} entries, got {len(entries)}")
            for entry in entries:
                op, sep, index = entry.partition("~")
                if not sep or not index.isdigit():
                    raise ValueError(f"arch string node {node} entry {entry!r}: must be 'op~input'")
                frm = int(index)
                if frm >= node:
                    raise ValueError(f"arch string node {node} entry {entry!r}: node {node} reads nodes 0..{node - 1}")
                if (node, frm) in ops:
                    raise ValueError(f"arch string node {node}: input {frm} appears twice")
                if op not in NB201_PRIMITIVES:
                    raise ValueError(f"arch string node {node} entry {entry!r}: unknown op {op!r}; "
                                     f"expected one of {', '.join(NB201_PRIMITIVES)}")
                ops[(node, frm)] = op
        return cls(tuple(ops[e] for e in NB201_EDGES))

    def to_json(self) -> dict:
        return {"space": "nas-bench-201", "arch": self.to_arch_str()}

    @classmethod
    def from_json(cls, data: Union[dict, str]) -> "NB201Genotype":
        data = json.loads(data) if isinstance(data, str) else data
        _check_space_tag(data, "nas-bench-201")
        if "arch" not in data:
            raise ValueError("NAS-Bench-201 genotype JSON lacks the field 'arch'")
        return cls.from_arch_str(data["arch"])

    def save(self, path: PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: PathLike) -> "NB201Genotype":
        return cls.from_json(Path(path).read_text())


# ---------------------------------------------------------------------------
def _check_space_tag(data: Any, expected: str) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"genotype JSON must be an object, got {type(data).__name__}")
    space = data.get("space", expected)
    if space != expected:
        raise ValueError(f"genotype JSON is for space {space!r}, not {expected!r}")


_BY_SPACE = {"darts": DartsGenotype, "nas-bench-201": NB201Genotype}


def genotype_from_json(data: Union[dict, str]) -> Union[DartsGenotype, NB201Genotype]:
    """Build the genotype whose kind the ``"space"`` tag names."""
    data = json.loads(data) if isinstance(data, str) else data
    space = data.get("space") if isinstance(data, dict) else None
    if space not in _BY_SPACE:
        raise ValueError(f"genotype JSON needs a 'space' tag, one of {', '.join(_BY_SPACE)}; got {space!r}")
    return _BY_SPACE[space].from_json(data)


def load_genotype(path: PathLike) -> Union[DartsGenotype, NB201Genotype]:
    """Read a genotype saved by ``save`` of either kind; every failure names the file."""
    file = Path(path)
    if file.is_dir():
        raise ValueError(f"{file}: is a folder; give a genotype file (pynas search writes RUN_DIR/genotype.json)")
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such genotype file (pynas search writes RUN_DIR/genotype.json)")
    try:
        data = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{file}: not a readable genotype JSON file ({err})") from None
    try:
        return genotype_from_json(data)
    except (ValueError, TypeError, KeyError, IndexError) as err:
        raise ValueError(f"{file}: {err}") from None


# ---------------------------------------------------------------------------
# Published cells (as listed in PC-DARTS's genotypes.py, Xu et al., ICLR 2020)
# ---------------------------------------------------------------------------
_CONCAT = (2, 3, 4, 5)

# DARTS first order (Liu et al., ICLR 2019), CIFAR-10: 3.00 % test error.
DARTS_V1 = DartsGenotype(
    normal=(("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
            ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)),
    normal_concat=_CONCAT,
    reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)),
    reduce_concat=_CONCAT,
)

# DARTS second order (Liu et al., ICLR 2019), CIFAR-10: 2.76 % test error, 3.3M params.
DARTS_V2 = DartsGenotype(
    normal=(("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)),
    normal_concat=_CONCAT,
    reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)),
    reduce_concat=_CONCAT,
)

# PC-DARTS searched on CIFAR-10 (Xu et al., ICLR 2020; "PC_DARTS_cifar"): 2.57 % test error.
PC_DARTS = DartsGenotype(
    normal=(("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
            ("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("avg_pool_3x3", 0), ("dil_conv_3x3", 1)),
    normal_concat=_CONCAT,
    reduce=(("sep_conv_5x5", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_5x5", 2),
            ("sep_conv_3x3", 0), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2)),
    reduce_concat=_CONCAT,
)
