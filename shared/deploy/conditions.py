"""Analysis conditions: tiny boolean expressions over a metric's ``result`` (``result < 0.05``).

A condition is parsed with :mod:`ast` and checked against a short allow-list before it is ever
evaluated, and it is evaluated by walking that tree here, never with ``eval``/``compile``:
comparisons (``< <= > >= == !=``, chained), ``and``/``or``/``not``, numeric constants (unary ``-``
and ``+`` allowed), the name ``result`` and ``abs(...)``. Anything else (attributes, other names or
calls, subscripts, arithmetic, strings, lambdas, ...) is refused when the services file is loaded,
with a message saying what was found, so a bad expression stops the process at start instead of
at the first measurement.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from typing import Any

#: Longest condition accepted (characters): keeps the tree shallow and the record small.
MAX_LENGTH = 200

_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}


class Condition:
    """A checked condition; ``condition(result)`` is its truth for one measured value."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._tree = parse(text)

    def __call__(self, result: float) -> bool:
        return bool(_eval(self._tree.body, result))

    def __repr__(self) -> str:
        return f"Condition({self.text!r})"


def parse(text: str) -> ast.Expression:
    """The checked tree of ``text``; ValueError naming what is not allowed."""
    if not text.strip():
        raise ValueError("must not be empty")
    if len(text) > MAX_LENGTH:
        raise ValueError(f"must be at most {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not a valid expression: {exc.msg}") from None
    if not isinstance(tree.body, ast.Compare | ast.BoolOp) and not (
        isinstance(tree.body, ast.UnaryOp) and isinstance(tree.body.op, ast.Not)
    ):
        raise ValueError("must be a comparison, e.g. 'result < 0.05' (combine with and/or/not)")
    _check(tree.body)
    return tree


def check(text: str | None) -> str | None:
    """``text`` when it is an allowed condition (a pydantic validator); ValueError otherwise."""
    if text is not None:
        parse(text)
    return text


def _check(node: ast.AST) -> None:
    """Refuse every node outside the allow-list (ValueError saying which)."""
    if isinstance(node, ast.BoolOp):
        for value in node.values:
            _check(value)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not | ast.USub | ast.UAdd):
        _check(node.operand)
    elif isinstance(node, ast.Compare):
        for op in node.ops:
            if type(op) not in _COMPARE:
                raise ValueError(f"comparison {type(op).__name__} is not allowed (use < <= > >= == !=)")
        for part in (node.left, *node.comparators):
            _check(part)
    elif isinstance(node, ast.Call):
        if not (isinstance(node.func, ast.Name) and node.func.id == "abs" and len(node.args) == 1) or (
            node.keywords
        ):
            raise ValueError("only abs(x) may be called")
        _check(node.args[0])
    else:
        _check_leaf(node)


def _check_leaf(node: ast.AST) -> None:
    """A number or the name ``result``; ValueError for anything else."""
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ValueError(f"only numbers are allowed as constants (found {node.value!r})")
    elif isinstance(node, ast.Name):
        if node.id != "result":
            raise ValueError(f"unknown name {node.id!r} (only 'result' is allowed)")
    else:
        raise ValueError(f"{type(node).__name__} is not allowed (comparisons of 'result' with numbers only)")


def _eval(node: ast.AST, result: float) -> Any:
    """The value of a checked node for ``result``."""
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            return all(_eval(v, result) for v in node.values)
        return any(_eval(v, result) for v in node.values)
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, result)
        if isinstance(node.op, ast.Not):
            return not value
        return -value if isinstance(node.op, ast.USub) else +value
    if isinstance(node, ast.Compare):
        left = _eval(node.left, result)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = _eval(comparator, result)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return result
    if isinstance(node, ast.Call):
        return abs(_eval(node.args[0], result))
    raise ValueError(f"{type(node).__name__} is not allowed")  # unreachable after parse()
