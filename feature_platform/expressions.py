"""A tiny expression language that compiles to pandas and to Spark from one definition.

Feature definitions need arithmetic over columns (``col("quantity") * col("unit_price")``),
comparisons (``col("total_spend_30d") > 1000``) and conditionals
(``when(col("order_count_30d") > 0, 30 / col("order_count_30d"))``). A Python lambda would
run only in pandas; these trees also become Spark ``Column`` expressions, so both engines
compute the same thing.

Types are tracked so money stays exact: a ``decimal(p,s)`` column is carried as its unscaled
integer (int64 while the data proves it cannot wrap, exact Python ints in pandas and
DECIMAL(38,0) in Spark beyond that), products and sums of decimals stay integers, and only a
division (or a mean) turns them into floats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class DType:
    """``int``, ``float``, ``bool``, ``string``, ``timestamp``, or ``decimal`` with a scale."""

    kind: str
    scale: int = 0

    def __str__(self) -> str:
        return f"decimal(38,{self.scale})" if self.kind == "decimal" else self.kind


INT, FLOAT, BOOL, STRING, TIMESTAMP = DType("int"), DType("float"), DType("bool"), DType("string"), DType("timestamp")


def decimal(scale: int) -> DType:
    return DType("decimal", scale)


NUMERIC = ("int", "float", "decimal")


class Expr:
    def __add__(self, other): return _Binary("+", self, _wrap(other))
    def __radd__(self, other): return _Binary("+", _wrap(other), self)
    def __sub__(self, other): return _Binary("-", self, _wrap(other))
    def __rsub__(self, other): return _Binary("-", _wrap(other), self)
    def __mul__(self, other): return _Binary("*", self, _wrap(other))
    def __rmul__(self, other): return _Binary("*", _wrap(other), self)
    def __truediv__(self, other): return _Binary("/", self, _wrap(other))
    def __rtruediv__(self, other): return _Binary("/", _wrap(other), self)
    def __gt__(self, other): return _Binary(">", self, _wrap(other))
    def __ge__(self, other): return _Binary(">=", self, _wrap(other))
    def __lt__(self, other): return _Binary("<", self, _wrap(other))
    def __le__(self, other): return _Binary("<=", self, _wrap(other))
    def __and__(self, other): return _Binary("and", self, _wrap(other))
    def __or__(self, other): return _Binary("or", self, _wrap(other))

    def eq(self, other) -> "Expr":
        return _Binary("==", self, _wrap(other))

    def is_null(self) -> "Expr":
        return _IsNull(self)

    def columns(self) -> set[str]:
        raise NotImplementedError

    def dtype(self, types: dict[str, DType]) -> DType:
        raise NotImplementedError

    def to_pandas(self, frame: pd.DataFrame, types: dict[str, DType]) -> pd.Series:
        """Evaluate over a frame whose decimal columns hold unscaled integers (nullable Int64)."""
        raise NotImplementedError

    def to_spark(self, types: dict[str, DType]):
        raise NotImplementedError


def _wrap(value: Any) -> Expr:
    return value if isinstance(value, Expr) else Literal(value)


@dataclass(frozen=True, eq=False)
class Column(Expr):
    name: str

    def columns(self): return {self.name}
    def dtype(self, types): return types[self.name]
    def to_pandas(self, frame, types): return frame[self.name]

    def to_spark(self, types):
        from pyspark.sql import functions as F
        return F.col(self.name)

    def __repr__(self): return f"col({self.name!r})"


@dataclass(frozen=True, eq=False)
class Literal(Expr):
    value: Any

    def columns(self): return set()

    def dtype(self, types):
        if isinstance(self.value, bool):
            return BOOL
        if isinstance(self.value, int):
            return INT
        if isinstance(self.value, float):
            return FLOAT
        if isinstance(self.value, str):
            return STRING
        raise TypeError(f"unsupported literal {self.value!r}")

    def to_pandas(self, frame, types): return pd.Series(self.value, index=frame.index)

    def to_spark(self, types):
        from pyspark.sql import functions as F
        if isinstance(self.value, int) and not isinstance(self.value, bool):
            # An INT is 64-bit, as in pandas (Int64): Spark would type a small literal as a
            # 32-bit int, and lit(1000) * 10**8 (a decimal comparison's rescaling) would overflow.
            return F.lit(self.value).cast("long")
        return F.lit(self.value)

    def __repr__(self): return repr(self.value)


def _scale_up(value, by: int, engine: str):
    """Multiply an unscaled integer (or an int) by 10**by, exactly."""
    if by == 0:
        return value
    return value * (10 ** by)


def _as_float(value, dtype: DType, engine: str):
    """A numeric value as a float: decimals divide their unscaled integer by 10**scale."""
    if engine == "pandas":
        result = value.astype("Float64")
    else:
        result = value.cast("double")
    if dtype.kind == "decimal" and dtype.scale:
        result = result / float(10 ** dtype.scale)
    return result


@dataclass(frozen=True, eq=False)
class _Binary(Expr):
    op: str
    left: Expr
    right: Expr

    def columns(self): return self.left.columns() | self.right.columns()

    def dtype(self, types):
        left, right = self.left.dtype(types), self.right.dtype(types)
        if self.op in (">", ">=", "<", "<=", "==", "and", "or"):
            return BOOL
        if left.kind not in NUMERIC or right.kind not in NUMERIC:
            raise TypeError(f"{self!r}: {self.op} needs numbers, got {left} and {right}")
        if self.op == "/" or FLOAT in (left, right):
            return FLOAT
        if left.kind == "decimal" or right.kind == "decimal":
            if self.op == "*":
                return decimal(left.scale + right.scale)
            return decimal(max(left.scale, right.scale))
        return INT

    def _operands(self, types, engine, evaluate):
        """Bring both sides to a common representation for this operator."""
        left_type, right_type = self.left.dtype(types), self.right.dtype(types)
        left, right = evaluate(self.left), evaluate(self.right)
        result_type = self.dtype(types)
        if self.op in ("and", "or"):
            return left, right
        if self.op == "/" or (result_type == FLOAT) or (
            self.op in (">", ">=", "<", "<=", "==") and FLOAT in (left_type, right_type)
        ):
            if left_type.kind in NUMERIC:
                left = _as_float(left, left_type, engine)
            if right_type.kind in NUMERIC:
                right = _as_float(right, right_type, engine)
            return left, right
        if self.op == "*":
            return left, right  # unscaled * unscaled carries the summed scale
        # +, -, and comparisons between exact numbers: align the scales, stay exact.
        target = max(left_type.scale if left_type.kind == "decimal" else 0,
                     right_type.scale if right_type.kind == "decimal" else 0)
        if left_type.kind in ("int", "decimal"):
            left = _scale_up(left, target - (left_type.scale if left_type.kind == "decimal" else 0), engine)
        if right_type.kind in ("int", "decimal"):
            right = _scale_up(right, target - (right_type.scale if right_type.kind == "decimal" else 0), engine)
        return left, right

    def to_pandas(self, frame, types):
        left, right = self._operands(types, "pandas", lambda e: e.to_pandas(frame, types))
        op = self.op
        if op == "/":
            right = right.where(right != 0)  # x / 0 is null, as in Spark SQL
            return (left / right).astype("Float64")
        if op == "and":
            return left.astype("boolean") & right.astype("boolean")
        if op == "or":
            return left.astype("boolean") | right.astype("boolean")
        result = {"+": lambda: left + right, "-": lambda: left - right, "*": lambda: left * right,
                  ">": lambda: left > right, ">=": lambda: left >= right, "<": lambda: left < right,
                  "<=": lambda: left <= right, "==": lambda: left == right}[op]()
        return result.astype("boolean") if op in (">", ">=", "<", "<=", "==") else result

    def to_spark(self, types):
        left, right = self._operands(types, "spark", lambda e: e.to_spark(types))
        from pyspark.sql import functions as F
        op = self.op
        if op == "/":
            return F.when(right != 0, left / right)
        return {"+": lambda: left + right, "-": lambda: left - right, "*": lambda: left * right,
                ">": lambda: left > right, ">=": lambda: left >= right, "<": lambda: left < right,
                "<=": lambda: left <= right, "==": lambda: left == right,
                "and": lambda: left & right, "or": lambda: left | right}[op]()

    def __repr__(self): return f"({self.left!r} {self.op} {self.right!r})"


@dataclass(frozen=True, eq=False)
class _IsNull(Expr):
    inner: Expr

    def columns(self): return self.inner.columns()
    def dtype(self, types): return BOOL
    def to_pandas(self, frame, types): return self.inner.to_pandas(frame, types).isna().astype("boolean")
    def to_spark(self, types): return self.inner.to_spark(types).isNull()
    def __repr__(self): return f"{self.inner!r}.is_null()"


@dataclass(frozen=True, eq=False)
class _When(Expr):
    condition: Expr
    then: Expr
    otherwise: Expr | None

    def columns(self):
        found = self.condition.columns() | self.then.columns()
        return found | (self.otherwise.columns() if self.otherwise is not None else set())

    def dtype(self, types):
        then = self.then.dtype(types)
        if self.otherwise is None:
            return then
        other = self.otherwise.dtype(types)
        if then == other:
            return then
        if then.kind in NUMERIC and other.kind in NUMERIC:
            return FLOAT
        raise TypeError(f"{self!r}: branches have different types {then} and {other}")

    def _branch(self, branch: Expr, types, engine, value):
        result_type, branch_type = self.dtype(types), branch.dtype(types)
        if result_type == FLOAT and branch_type != FLOAT:
            return _as_float(value, branch_type, engine)
        return value

    def to_pandas(self, frame, types):
        condition = self.condition.to_pandas(frame, types).fillna(False).astype(bool)
        then = self._branch(self.then, types, "pandas", self.then.to_pandas(frame, types))
        if self.otherwise is None:
            return then.where(condition)
        other = self._branch(self.otherwise, types, "pandas", self.otherwise.to_pandas(frame, types))
        return then.where(condition, other)

    def to_spark(self, types):
        from pyspark.sql import functions as F
        then = self._branch(self.then, types, "spark", self.then.to_spark(types))
        result = F.when(self.condition.to_spark(types), then)
        if self.otherwise is not None:
            result = result.otherwise(self._branch(self.otherwise, types, "spark", self.otherwise.to_spark(types)))
        return result

    def __repr__(self): return f"when({self.condition!r}, {self.then!r}, {self.otherwise!r})"


def col(name: str) -> Expr:
    return Column(name)


def lit(value: Any) -> Expr:
    return Literal(value)


def when(condition: Expr, then: Any, otherwise: Any = None) -> Expr:
    return _When(condition, _wrap(then), None if otherwise is None else _wrap(otherwise))


def to_float_value(value, dtype: DType):
    """A Python scalar of an expression's type, as a user sees it (decimals unscaled)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    if dtype.kind == "decimal":
        return int(value) / 10 ** dtype.scale
    return value.item() if isinstance(value, np.generic) else value


@dataclass(frozen=True, eq=False)
class _Length(Expr):
    inner: Expr

    def columns(self): return self.inner.columns()

    def dtype(self, types):
        if self.inner.dtype(types) != STRING:
            raise TypeError(f"{self!r}: length() needs a string")
        return INT

    def to_pandas(self, frame, types): return self.inner.to_pandas(frame, types).str.len().astype("Int64")

    def to_spark(self, types):
        from pyspark.sql import functions as F
        return F.length(self.inner.to_spark(types)).cast("long")

    def __repr__(self): return f"length({self.inner!r})"


def length(expr: Expr) -> Expr:
    """Characters in a string (null stays null)."""
    return _Length(expr)
