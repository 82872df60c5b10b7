"""The expression language of derived features: what it computes and what it refuses."""

from __future__ import annotations

import numpy as np
import pytest

from app.modules.features.expressions import parse
from contracts.common import InvalidInput

NAN = np.nan


def evaluate(text: str, **columns: list[float]) -> np.ndarray:
    return parse(text).evaluate({name: np.array(values) for name, values in columns.items()})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 + 2 * 3 ** 2", 19.0),
        ("(1 + 2) * 3", 9.0),
        ("10 - 4 - 3", 3.0),
        ("2 ** 3 ** 2", 512.0),
        ("-2 ** 2", -4.0),
        ("-7 % 3", 2.0),
        ("7 / 2", 3.5),
        ("1 + 1 == 2", 1.0),
        ("2 < 1 or 3 > 2 and 1", 1.0),
        ("not 1 + 1 == 3", 1.0),
        ("1 < 2 < 3", 1.0),
        ("1 < 3 < 2", 0.0),
        ("5 if 0 else 6 if 1 else 7", 6.0),
        ("abs(-2) + sqrt(9) + exp(0) + log(1) + log1p(0)", 6.0),
        ("min(3, 1, 2) + max(3, 1, 2) * 10", 31.0),
        ("clip(5, 0, 2) + clip(-5, 0, 2)", 2.0),
        ("1e3 + .5", 1000.5),
    ],
)
def test_evaluates_numbers_with_python_precedence(text: str, expected: float) -> None:
    assert evaluate(text, x=[0.0, 0.0]).tolist() == [expected, expected]


def test_reads_plain_and_backticked_references_row_by_row() -> None:
    expression = parse("`user:age` * 2 + bonus if `user:age` >= 18 else 0")

    assert expression.references == frozenset({"user:age", "bonus"})
    result = expression.evaluate({"user:age": np.array([20.0, 10.0]), "bonus": np.array([1, 2])})
    assert result.dtype == np.float64
    assert result.tolist() == [41.0, 0.0]


def test_functions_are_elementwise_like_numpy() -> None:
    a, b = np.array([1.0, 4.0, 9.0]), np.array([2.0, 3.0, 10.0])
    result = parse("max(a, b) - min(a, b, 5) + sqrt(a) * log(b) + clip(a, 2, 8)").evaluate(
        {"a": a, "b": b}
    )
    expected = np.maximum(a, b) - np.minimum(np.minimum(a, b), 5) + np.sqrt(a) * np.log(b)
    np.testing.assert_allclose(result, expected + np.clip(a, 2, 8))


def test_missing_values_propagate_through_every_operation() -> None:
    for text in ["a + 1", "a > 1", "a == a", "a and 1", "0 or a", "not a", "1 if a else 2"]:
        assert np.isnan(evaluate(text, a=[NAN])).all(), text
    assert evaluate("b if a else 2", a=[0.0, 1.0], b=[NAN, 3.0]).tolist() == [2.0, 3.0]


def test_division_by_zero_and_bad_domains_give_inf_and_nan_without_warnings() -> None:
    result = evaluate("a / b", a=[1.0, -1.0, 0.0], b=[0.0, 0.0, 0.0])
    assert result[:2].tolist() == [np.inf, -np.inf]
    assert np.isnan(result[2])
    assert np.isnan(evaluate("log(a) + sqrt(a) + a % 0", a=[-1.0])).all()
    assert evaluate("10 ** 1000", a=[1.0]).tolist() == [np.inf]


def test_a_constant_expression_fills_every_row() -> None:
    assert evaluate("2 * 3", a=[1.0, 2.0, 3.0]).tolist() == [6.0, 6.0, 6.0]


def test_evaluating_without_a_referenced_column_names_it() -> None:
    with pytest.raises(InvalidInput, match="no feature 'b'"):
        parse("a + b").evaluate({"a": np.array([1.0])})


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("__import__('os')", "unknown function '__import__'"),
        ("a.__class__", "attribute access is not allowed ('a.__class__')"),
        ("`user:age`.real", "attribute access is not allowed ('`user:age`.real')"),
        ("a[0]", "subscripts are not allowed"),
        ("open('x')", "unknown function 'open'"),
        ("a.b(1)", "only the named functions can be called"),
        ("max(a, key=b)", "keyword arguments are not allowed in max()"),
        ("log(a, 2)", "log() takes 1 argument"),
        ("min(a)", "min() takes at least 2 argument"),
        ("'text'", "only numbers are allowed as constants"),
        ("True", "only numbers are allowed as constants"),
        ("1j", "only numbers are allowed as constants"),
        ("lambda: 1", "lambdas are not allowed"),
        ("[x for x in a]", "comprehensions are not allowed"),
        ("(a := 1)", "assignments are not allowed"),
        ("f'{a}'", "strings are not allowed"),
        ("a << 1", "only + - * / ** % operators are allowed"),
        ("~a", "bitwise operators are not allowed"),
        ("a in b", "only < <= > >= == != comparisons are allowed"),
        ("[a, b]", "List is not allowed"),
        ("a +", "is not valid"),
        ("import os", "is not valid"),
        ("a = 1", "is not valid"),
        ("`user:age", "unterminated backtick"),
        ("`` + 1", "empty feature reference"),
        ("-" * 60 + "a", "nested deeper than 50 levels"),
        ("1" + " + 1" * 400, "longer than 1000 characters"),
        ("(" * 300 + "1" + ")" * 300, "is not valid"),
    ],
)
def test_rejects_anything_but_the_language_naming_the_problem(text: str, problem: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse(text)
    assert problem in caught.value.message
    assert text[:20] in caught.value.message
