"""The expression language of :class:`contracts.features.Derived` transforms.

An expression is numbers, feature references (plain names like ``age``, or backtick-quoted
like ```user:age``` for names that are not identifiers), ``+ - * / ** %``, unary minus,
comparisons (``1.0`` or ``0.0``), ``and or not``, ``a if cond else b`` and the functions
``abs log log1p exp sqrt min max clip``. Python's parser reads it; a strict whitelist of syntax
nodes is compiled into numpy closures. Nothing is ever evaluated as Python.

Evaluation is vectorised over rows in float64. Missing values are NaN and propagate through
every operation, comparisons and boolean operators included; division by zero gives inf or NaN
as numpy does.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from contracts.common import InvalidInput

__all__ = ["MAX_DEPTH", "MAX_LENGTH", "Expression", "parse"]

MAX_LENGTH = 1000
"""The longest expression text accepted, in characters."""

MAX_DEPTH = 50
"""The deepest nesting of operations accepted."""

Columns = Mapping[str, np.ndarray]
_Node = Callable[[Columns], Any]

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: np.add,
    ast.Sub: np.subtract,
    ast.Mult: np.multiply,
    ast.Div: np.true_divide,
    ast.Pow: np.power,
    ast.Mod: np.mod,
}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Lt: np.less,
    ast.LtE: np.less_equal,
    ast.Gt: np.greater,
    ast.GtE: np.greater_equal,
    ast.Eq: np.equal,
    ast.NotEq: np.not_equal,
}
# name -> (fewest arguments, most arguments or None for no limit, implementation)
_FUNCTIONS: dict[str, tuple[int, int | None, Callable[..., Any]]] = {
    "abs": (1, 1, np.abs),
    "log": (1, 1, np.log),
    "log1p": (1, 1, np.log1p),
    "exp": (1, 1, np.exp),
    "sqrt": (1, 1, np.sqrt),
    "min": (2, None, lambda *args: functools.reduce(np.minimum, args)),
    "max": (2, None, lambda *args: functools.reduce(np.maximum, args)),
    "clip": (3, 3, lambda x, lo, hi: np.minimum(np.maximum(x, lo), hi)),
}
_REJECTED: dict[type[ast.AST], str] = {
    ast.Attribute: "attribute access is not allowed",
    ast.Subscript: "subscripts are not allowed",
    ast.Lambda: "lambdas are not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.JoinedStr: "strings are not allowed",
    ast.NamedExpr: "assignments are not allowed",
    ast.Starred: "starred arguments are not allowed",
}
_BACKTICKED = re.compile(r"`([^`]*)`")


@dataclass(frozen=True)
class Expression:
    """A parsed expression; :attr:`references` are the feature names it reads."""

    text: str
    references: frozenset[str]
    _root: _Node = field(repr=False, compare=False)

    def evaluate(self, columns: Columns) -> np.ndarray:
        """The expression for every row of ``columns`` (name -> one value per row), as float64.

        Constant expressions are broadcast to the row count of ``columns`` (a 0-d array when
        ``columns`` is empty). An unknown reference is ``InvalidInput``.
        """
        missing = sorted(self.references - columns.keys())
        if missing:
            raise InvalidInput(f"expression {self.text!r}: no feature {missing[0]!r}")
        with np.errstate(all="ignore"):
            result = np.asarray(self._root(columns), dtype=np.float64)
        if result.ndim == 0 and columns:
            rows = len(next(iter(columns.values())))
            return np.full(rows, result, dtype=np.float64)
        return result


def parse(text: str) -> Expression:
    """Parse ``text`` into an :class:`Expression`; ``InvalidInput`` names what is not allowed."""
    if len(text) > MAX_LENGTH:
        raise InvalidInput(f"expression is longer than {MAX_LENGTH} characters: {text[:40]!r}...")
    source, names = _rewrite_backticks(text)
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
        reason = getattr(error, "msg", None) or "too complex"
        raise InvalidInput(f"expression {text!r} is not valid: {reason}") from None
    compiler = _Compiler(text, source.strip(), names)
    root = compiler.compile(tree.body, 1)
    return Expression(text=text, references=frozenset(compiler.references), _root=root)


def _rewrite_backticks(text: str) -> tuple[str, dict[str, str]]:
    """Replace each ```name``` by a placeholder identifier; answers the text and placeholders."""
    prefix = "_ref"
    while prefix in text:
        prefix = "_" + prefix
    placeholders: dict[str, str] = {}  # name -> placeholder

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if not name.strip():
            raise InvalidInput(f"expression {text!r}: empty feature reference ``")
        return placeholders.setdefault(name, f"{prefix}{len(placeholders)}_")

    source = _BACKTICKED.sub(substitute, text)
    if "`" in source:
        raise InvalidInput(f"expression {text!r}: unterminated backtick")
    return source, {placeholder: name for name, placeholder in placeholders.items()}


class _Compiler:
    """Turns whitelisted syntax nodes into closures over a mapping of columns."""

    def __init__(self, text: str, source: str, names: dict[str, str]) -> None:
        self.text = text
        self.source = source
        self.names = names
        self.references: set[str] = set()

    def reject(self, node: ast.AST, problem: str) -> InvalidInput:
        segment = ast.get_source_segment(self.source, node) or ""
        for placeholder, name in self.names.items():
            segment = segment.replace(placeholder, f"`{name}`")
        return InvalidInput(f"expression {self.text!r}: {problem} ({segment!r})")

    def compile(self, node: ast.AST, depth: int) -> _Node:  # noqa: PLR0911 - one case per node
        if depth > MAX_DEPTH:
            raise self.reject(node, f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, ast.Constant):
            return self.constant(node)
        if isinstance(node, ast.Name):
            name = self.names.get(node.id, node.id)
            self.references.add(name)
            return lambda columns: np.asarray(columns[name], dtype=np.float64)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            op = _BINARY[type(node.op)]
            left, right = self.compile(node.left, depth + 1), self.compile(node.right, depth + 1)
            return lambda columns: op(left(columns), right(columns))
        if isinstance(node, ast.UnaryOp):
            return self.unary(node, depth)
        if isinstance(node, ast.Compare):
            return self.compare(node, depth)
        if isinstance(node, ast.BoolOp):
            values = [self.compile(value, depth + 1) for value in node.values]
            both = isinstance(node.op, ast.And)
            return lambda columns: functools.reduce(
                lambda a, b: _logical(a, b, both=both), (value(columns) for value in values)
            )
        if isinstance(node, ast.IfExp):
            test = self.compile(node.test, depth + 1)
            body, orelse = self.compile(node.body, depth + 1), self.compile(node.orelse, depth + 1)
            return lambda columns: _choose(test(columns), body(columns), orelse(columns))
        if isinstance(node, ast.Call):
            return self.call(node, depth)
        if isinstance(node, ast.BinOp):
            raise self.reject(node, "only + - * / ** % operators are allowed")
        raise self.reject(node, _REJECTED.get(type(node), f"{type(node).__name__} is not allowed"))

    def constant(self, node: ast.Constant) -> _Node:
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise self.reject(node, "only numbers are allowed as constants")
        try:
            value = float(node.value)
        except OverflowError:
            raise self.reject(node, "number too large") from None
        return lambda columns: value

    def unary(self, node: ast.UnaryOp, depth: int) -> _Node:
        operand = self.compile(node.operand, depth + 1)
        if isinstance(node.op, ast.USub):
            return lambda columns: np.negative(operand(columns))
        if isinstance(node.op, ast.UAdd):
            return operand
        if isinstance(node.op, ast.Not):
            return lambda columns: _not(operand(columns))
        raise self.reject(node, "bitwise operators are not allowed")

    def compare(self, node: ast.Compare, depth: int) -> _Node:
        operands = [self.compile(node.left, depth + 1)]
        operands += [self.compile(item, depth + 1) for item in node.comparators]
        ops = [_COMPARE[type(op)] for op in node.ops if type(op) in _COMPARE]
        if len(ops) != len(node.ops):
            raise self.reject(node, "only < <= > >= == != comparisons are allowed")

        def evaluate(columns: Columns) -> Any:
            values = [operand(columns) for operand in operands]
            results = [
                _missing_propagated(op(a, b), a, b)
                for op, a, b in zip(ops, values, values[1:], strict=False)
            ]
            return functools.reduce(lambda a, b: _logical(a, b, both=True), results)

        return evaluate

    def call(self, node: ast.Call, depth: int) -> _Node:
        if not isinstance(node.func, ast.Name):
            raise self.reject(node, "only the named functions can be called")
        if node.func.id not in _FUNCTIONS:
            raise self.reject(node, f"unknown function {node.func.id!r}")
        name = node.func.id
        if node.keywords:
            raise self.reject(node, f"keyword arguments are not allowed in {name}()")
        fewest, most, function = _FUNCTIONS[name]
        if len(node.args) < fewest or (most is not None and len(node.args) > most):
            wanted = f"{fewest}" if most == fewest else f"at least {fewest}"
            raise self.reject(node, f"{name}() takes {wanted} argument(s)")
        args = [self.compile(arg, depth + 1) for arg in node.args]
        return lambda columns: function(*(arg(columns) for arg in args))


def _missing(value: Any) -> Any:
    return np.isnan(value)


def _missing_propagated(result: Any, *operands: Any) -> Any:
    """``result`` as 1.0/0.0, NaN where any operand is missing."""
    missing = functools.reduce(np.logical_or, (_missing(operand) for operand in operands))
    return np.where(missing, np.nan, np.asarray(result, dtype=np.float64))


def _logical(a: Any, b: Any, *, both: bool) -> Any:
    combine = np.logical_and if both else np.logical_or
    return _missing_propagated(combine(np.not_equal(a, 0), np.not_equal(b, 0)), a, b)


def _not(value: Any) -> Any:
    return _missing_propagated(np.equal(value, 0), value)


def _choose(test: Any, body: Any, orelse: Any) -> Any:
    return np.where(_missing(test), np.nan, np.where(np.not_equal(test, 0), body, orelse))
