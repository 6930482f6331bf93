"""Limits every input meets before any view, service or database sees it.

One place for what the API parser, the bundle importer and the admin share: JSON that
is not nested too deeply, text without NUL characters or lone surrogates (PostgreSQL
refuses the first and UTF-8 cannot encode the second), numbers that are finite, and
money that fits the model's columns. Each check names the place of the bad value as a
path (``items[3].daily_budget``) so the answer can say which field and which item.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

from django.conf import settings

# Free text the API accepts, in characters. The model columns are TEXT (unbounded), so
# the bound lives here, where every door checks it.
NOTES_MAX_LENGTH = 10_000
REASON_MAX_LENGTH = 2_000
RATIONALE_MAX_LENGTH = 5_000
# 64-bit signed integers: larger JSON integers are refused before they reach a query.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1


class BadInput(Exception):
    """One refused value: ``field`` is a path into the input, ``code`` a machine word."""

    def __init__(self, field: str, code: str, message: str, *, where: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.field, self.code, self.message = field, code, message
        self.where = where or {}  # e.g. the line and column of a syntax error

    def as_dict(self) -> dict[str, Any]:
        return {**self.where, "field": self.field, "code": self.code, "message": self.message}


def max_json_depth() -> int:
    return settings.JSON_MAX_DEPTH


def load_json(
    text: str | bytes,
    *,
    what: str = "The body",
    parse_float: Callable[[str], Any] | None = None,
    parse_constant: Callable[[str], Any] | None = None,
) -> Any:
    """``json.loads`` that refuses, as ``BadInput``, what would otherwise crash later.

    Guarantees: a document nested deeper than ``settings.JSON_MAX_DEPTH`` (or so deep
    that the parser itself would exhaust the stack) is refused with code ``too_deep``;
    a syntax error is refused with code ``malformed`` and its line and column; strings
    (keys and values) with NUL or lone surrogates are refused naming their path.
    """
    try:
        document = json.loads(text, parse_float=parse_float, parse_constant=parse_constant)
    except RecursionError:
        raise _too_deep(what) from None
    except json.JSONDecodeError as exc:
        raise BadInput(
            "body",
            "malformed",
            f"{what} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.",
            where={"line": exc.lineno, "column": exc.colno},
        ) from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise BadInput("body", "malformed", f"{what} is not valid JSON: {exc}.") from None
    check_document(document, what=what)
    return document


def _too_deep(what: str) -> BadInput:
    limit = max_json_depth()
    return BadInput("body", "too_deep", f"{what} is JSON nested more than {limit} levels deep; flatten it.")


def check_document(document: Any, *, what: str = "The body") -> None:
    """Refuse (``BadInput``) a parsed document that is too deep, holds a NUL or lone
    surrogate in any key or string, a non-finite number, or an integer beyond 64 bits.

    Walks iteratively, so a deep document cannot exhaust the stack here either.
    """
    limit = max_json_depth()
    for path, depth, value in _walk(document):
        if depth > limit:
            raise _too_deep(what)
        if isinstance(value, str):
            check_text(value, field=path)
        elif isinstance(value, float) and not math.isfinite(value):
            raise BadInput(path, "not_finite", f"{path}: NaN and Infinity are not numbers; send a finite value.")
        elif isinstance(value, int) and not isinstance(value, bool) and not INT_MIN <= value <= INT_MAX:
            raise BadInput(
                path, "out_of_range", f"{path}: the integer {_digits(value)} is out of range (at most 64 bits)."
            )


def _digits(value: int) -> str:
    text = str(abs(value))
    return f"{'-' if value < 0 else ''}{text[:12]}… ({len(text)} digits)" if len(text) > 12 else str(value)


def _walk(document: Any) -> Iterator[tuple[str, int, Any]]:
    """(path, depth, value) of every value and key; keys are yielded as strings."""
    stack: list[tuple[str, int, Any]] = [("", 0, document)]
    while stack:
        path, depth, value = stack.pop()
        yield path or "body", depth, value
        if isinstance(value, dict):
            for key, child in value.items():
                child_path = f"{path}.{key}" if path else str(key)
                if isinstance(key, str):
                    yield printable(child_path), depth + 1, key
                stack.append((printable(child_path), depth + 1, child))
        elif isinstance(value, list):
            stack.extend((f"{path}[{index}]" if path else f"[{index}]", depth + 1, v) for index, v in enumerate(value))


def printable(text: str) -> str:
    """``text`` as it can be shown and logged even when it holds a NUL or a surrogate."""
    if text_problem(text) is None:
        return text
    return text.replace("\x00", "\\u0000").encode("utf-8", "backslashreplace").decode("utf-8")


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored (``"nul"`` or ``"surrogate"``), or None."""
    if "\x00" in value:
        return "nul"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "surrogate"
    return None


def check_text(value: str, *, field: str, max_length: int | None = None) -> str:
    """``value`` if it can be stored as text; ``BadInput`` naming ``field`` otherwise."""
    problem = text_problem(value)
    if problem == "nul":
        raise BadInput(field, "nul_character", f"{field}: contains a NUL character (\\u0000); remove it.")
    if problem == "surrogate":
        raise BadInput(
            field, "surrogate_character", f"{field}: contains a lone UTF-16 surrogate, which is not valid text."
        )
    if max_length is not None and len(value) > max_length:
        raise BadInput(field, "too_long", f"{field}: is {len(value)} characters long; the limit is {max_length}.")
    return value


def money_limit(model, field_name: str) -> Decimal:
    """The smallest amount the model's DecimalField cannot store: 10^(digits - places)."""
    field = model._meta.get_field(field_name)
    return Decimal(10) ** (field.max_digits - field.decimal_places)
