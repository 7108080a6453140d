"""Privacy-budget value objects with exact arithmetic: :class:`Epsilon`, :class:`Delta`, :class:`PrivacyBudget`.

Budgets are added, subtracted, compared and split as :class:`fractions.Fraction`, never as floats:
``1/3 + 1/3 + 1/3`` is exactly ``1``, the shares of a split add up exactly to the whole, and a
ledger that sums a thousand spends never drifts past its declared total.

Accepted inputs (``Epsilon(x)``, ``Delta(x)`` and pydantic fields typed with them):

* ``int`` (not ``bool``), :class:`~fractions.Fraction`, finite :class:`~decimal.Decimal`: exactly.
* ``str``: a decimal or scientific literal (``"0.5"``, ``"1e-6"``, ``"1E-6"``) or a fraction
  (``"1/3"``), read exactly. PyYAML reads ``1e-6`` (no dot) as a string and ``1/3`` as a string,
  so both reach this parser as text.
* ``float``: read as the shortest decimal that reads back as the same float (``repr(x)``), i.e. the
  number as it was written in YAML or code: ``0.1`` is exactly ``1/10``, not the binary
  approximation ``3602879701896397/36028797018963968``. Floats are accepted because YAML numbers
  arrive as floats; the decimal reading is what the author wrote.
* NaN, infinities, other types, values out of range: :class:`InvalidBudgetValue` (a ``ValueError``,
  so pydantic reports it as a validation error and the spec layer turns it into a ``SpecError``).

Ranges: a declared or requested ε is ``> 0``; δ is ``0 <= δ < 1``. Zero ε exists only as the result
of arithmetic (``Epsilon.zero()``, what remains after everything is spent): it can be held and
printed but never parsed from input.

Values print and serialize as strings that parse back exactly: a terminating decimal prints as a
decimal (``"0.5"``, ``"1E-10"``), anything else as a fraction (``"1/3"``).

Mechanisms (diffprivlib) take floats: :meth:`Epsilon.to_float` and :meth:`Delta.to_float` return
the largest float not above the exact value, so noise calibrated with it is never smaller than
the budget accounts for.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, Union

if TYPE_CHECKING:  # pragma: no cover
    from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
    from pydantic.json_schema import JsonSchemaValue
    from pydantic_core import CoreSchema

__all__ = [
    "Delta",
    "Epsilon",
    "InvalidBudgetValue",
    "PrivacyBudget",
    "RationalLike",
    "to_fraction",
]

#: What the constructors accept as a number.
RationalLike = Union[int, str, Fraction, Decimal, float]  # noqa: UP007 (a runtime alias, read by docs and typing)

K = TypeVar("K")
Q = TypeVar("Q", bound="_Quantity")

# Guards against inputs whose exact value would take unbounded time or memory to build
# (Fraction("1e-999999999") computes 10**999999999).
_MAX_TEXT_LENGTH = 10_000
_MAX_DECIMAL_EXPONENT = 400
_DECIMAL_TEXT = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_FRACTION_TEXT = re.compile(r"[+-]?\d+/\d+")


class InvalidBudgetValue(ValueError):
    """A privacy-budget value is out of range, not a number, NaN or infinite."""


# ---------------------------------------------------------------------------------------------
# Parsing and formatting
# ---------------------------------------------------------------------------------------------
def _checked_decimal(value: Decimal, what: str, shown: str) -> Fraction:
    if not value.is_finite():
        raise InvalidBudgetValue(f"{what} must be a finite number, got {shown}")
    if value != 0 and abs(value.adjusted()) > _MAX_DECIMAL_EXPONENT:
        raise InvalidBudgetValue(f"{what} {shown} is out of range (decimal exponent beyond ±{_MAX_DECIMAL_EXPONENT})")
    return Fraction(value)


def to_fraction(value: Any, what: str = "value") -> Fraction:
    """The exact rational value of ``value`` (see the module docstring for the accepted inputs).

    Args:
        value: An ``int``, ``str``, ``Fraction``, ``Decimal``, ``float`` or an :class:`Epsilon` /
            :class:`Delta`.
        what: Name used in error messages (``"epsilon"``, ``"delta"``, ``"weight"``).

    Returns:
        The exact value as a :class:`~fractions.Fraction` (no range check beyond finiteness).

    Raises:
        InvalidBudgetValue: NaN, an infinity, an unreadable string or an unsupported type.
    """
    if isinstance(value, _Quantity):
        return value.fraction
    if isinstance(value, bool):
        raise InvalidBudgetValue(f"{what} must be a number, got a boolean ({value})")
    if isinstance(value, Fraction):
        return value
    if isinstance(value, numbers.Integral):
        return Fraction(int(value))
    if isinstance(value, Decimal):
        return _checked_decimal(value, what, str(value))
    if isinstance(value, float):  # also numpy.float64, a float subclass
        if not math.isfinite(value):
            raise InvalidBudgetValue(f"{what} must be a finite number, got {value!r}")
        return Fraction(repr(float(value)))
    if isinstance(value, str):
        text = value.strip()
        if len(text) > _MAX_TEXT_LENGTH:
            raise InvalidBudgetValue(f"{what} is not a number: a {len(text)}-character string")
        if _FRACTION_TEXT.fullmatch(text):
            try:
                numerator, denominator = (int(part) for part in text.split("/"))
            except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
                raise InvalidBudgetValue(f"{what} is not a number: too many digits") from None
            if denominator == 0:
                raise InvalidBudgetValue(f"{what} {text!r} divides by zero")
            return Fraction(numerator, denominator)
        if _DECIMAL_TEXT.fullmatch(text):
            return _checked_decimal(Decimal(text), what, repr(text))
        lowered = text.lower().lstrip("+-")
        if lowered in {"nan", "inf", "infinity", ".nan", ".inf"}:
            raise InvalidBudgetValue(f"{what} must be a finite number, got {text!r}")
        raise InvalidBudgetValue(
            f"{what} {text!r} is not a number; write a decimal ('0.5', '1e-6') or a fraction ('1/3')"
        )
    raise InvalidBudgetValue(
        f"{what} must be a number or a string such as '0.5', '1e-6' or '1/3', got {type(value).__name__}"
    )


def _format(value: Fraction) -> str:
    """Exact text that :func:`to_fraction` reads back: a decimal when the value terminates in base 10
    (``"0.5"``, ``"1E-7"``, ``"1E+200"``), otherwise ``p/q``."""
    numerator, denominator = value.numerator, value.denominator
    if denominator == 1 and len(str(abs(numerator))) <= 30:
        return str(numerator)
    rest, twos, fives = denominator, 0, 0
    while rest % 2 == 0:
        rest //= 2
        twos += 1
    while rest % 5 == 0:
        rest //= 5
        fives += 1
    if rest != 1:
        return f"{numerator}/{denominator}"
    exponent = -max(twos, fives)
    scaled = abs(numerator) * (10**-exponent // denominator)
    while scaled % 10 == 0:
        scaled //= 10
        exponent += 1
    # Built from its digits: exact (Decimal arithmetic would round to the context precision).
    decimal = Decimal((1 if numerator < 0 else 0, tuple(int(d) for d in str(scaled)), exponent))
    if abs(decimal.adjusted()) > _MAX_DECIMAL_EXPONENT:
        return f"{numerator}/{denominator}"
    return str(decimal)


def _float_at_most(value: Fraction) -> float:
    """The largest float that is not above ``value``."""
    approx = float(value)
    if Fraction(approx) > value:
        approx = math.nextafter(approx, -math.inf)
    return approx


# ---------------------------------------------------------------------------------------------
# Quantities
# ---------------------------------------------------------------------------------------------
class _Quantity:
    """An exact, immutable, non-negative privacy quantity (shared code of Epsilon and Delta)."""

    __slots__ = ("_value",)
    _symbol: ClassVar[str] = "?"
    _name: ClassVar[str] = "quantity"
    _value: Fraction

    def __init__(self, value: RationalLike | _Quantity) -> None:
        if isinstance(value, _Quantity) and not isinstance(value, type(self)):
            raise InvalidBudgetValue(f"{self._name} cannot be built from a {type(value).__name__}")
        if isinstance(value, type(self)):
            exact = value.fraction  # a copy keeps the source's (already checked) value, zero included
        else:
            exact = to_fraction(value, self._name)
            self._check_input(exact)
        object.__setattr__(self, "_value", exact)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def _check_input(cls, value: Fraction) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    @classmethod
    def _check_result(cls, value: Fraction) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    @classmethod
    def _from_fraction(cls: type[Q], value: Fraction) -> Q:
        """A quantity from an arithmetic result (zero allowed, range checked)."""
        cls._check_result(value)
        instance = cls.__new__(cls)
        object.__setattr__(instance, "_value", value)
        return instance

    @classmethod
    def zero(cls: type[Q]) -> Q:
        """The empty amount (what remains when everything is spent). Never valid as a request."""
        return cls._from_fraction(Fraction(0))

    @classmethod
    def total(cls: type[Q], values: Iterable[Q]) -> Q:
        """The exact sum of ``values`` (zero for none)."""
        result = Fraction(0)
        for item in values:
            result += cls._coerce(item).fraction
        return cls._from_fraction(result)

    @classmethod
    def _coerce(cls: type[Q], other: Any) -> Q:
        if isinstance(other, cls):
            return other
        raise TypeError(f"expected {cls.__name__}, got {type(other).__name__}")

    # -- access ------------------------------------------------------------------------------
    @property
    def fraction(self) -> Fraction:
        """The exact value."""
        return self._value

    @property
    def is_zero(self) -> bool:
        """True for the empty amount."""
        return self._value == 0

    def to_float(self) -> float:
        """The largest float not above the exact value (for mechanisms that take floats)."""
        return _float_at_most(self._value)

    # -- immutability, identity, text --------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self)._from_fraction, (self._value,))

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._value))

    def __eq__(self, other: object) -> bool:
        if type(other) is type(self):
            return self._value == other._value  # type: ignore[attr-defined]
        return NotImplemented

    def __lt__(self, other: Any) -> bool:
        return self._value < self._coerce(other).fraction

    def __le__(self, other: Any) -> bool:
        return self._value <= self._coerce(other).fraction

    def __gt__(self, other: Any) -> bool:
        return self._value > self._coerce(other).fraction

    def __ge__(self, other: Any) -> bool:
        return self._value >= self._coerce(other).fraction

    def __bool__(self) -> bool:
        return self._value != 0

    def __str__(self) -> str:
        return _format(self._value)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

    # -- arithmetic --------------------------------------------------------------------------
    def __add__(self: Q, other: Any) -> Q:
        if not isinstance(other, type(self)):
            return NotImplemented
        return self._from_fraction(self._value + other._value)

    def __radd__(self: Q, other: Any) -> Q:
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:
            return self  # lets the built-in sum() start from 0
        return NotImplemented

    def __sub__(self: Q, other: Any) -> Q:
        if not isinstance(other, type(self)):
            return NotImplemented
        result = self._value - other._value
        if result < 0:
            raise InvalidBudgetValue(
                f"cannot take {self._symbol}={other} from {self._symbol}={self}: the result would be negative"
            )
        return self._from_fraction(result)

    def __mul__(self: Q, factor: Any) -> Q:
        if isinstance(factor, _Quantity) or isinstance(factor, bool):
            return NotImplemented
        exact = to_fraction(factor, "factor")
        if exact < 0:
            raise InvalidBudgetValue(f"cannot scale {self._symbol}={self} by a negative factor ({factor})")
        return self._from_fraction(self._value * exact)

    __rmul__ = __mul__

    def __truediv__(self: Q, divisor: Any) -> Q:
        if isinstance(divisor, _Quantity) or isinstance(divisor, bool):
            return NotImplemented
        exact = to_fraction(divisor, "divisor")
        if exact <= 0:
            raise InvalidBudgetValue(f"cannot divide {self._symbol}={self} by {divisor}: use a positive divisor")
        return self._from_fraction(self._value / exact)

    # -- pydantic ----------------------------------------------------------------------------
    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        from pydantic_core import core_schema

        return core_schema.no_info_plain_validator_function(
            cls,
            serialization=core_schema.plain_serializer_function_ser_schema(str, when_used="json"),
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {
            "anyOf": [
                {"type": "number"},
                {"type": "string", "pattern": r"^\s*[+-]?(\d+/\d+|(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?)\s*$"},
            ],
            "description": cls._json_description,
        }

    _json_description: ClassVar[str] = ""


class Epsilon(_Quantity):
    """The ε of (ε, δ)-differential privacy: exact, immutable, ``> 0`` when given, finite.

    Examples:
        >>> Epsilon("1/3") + Epsilon("1/3") + Epsilon("1/3") == Epsilon(1)
        True
        >>> str(Epsilon(0.1)), str(Epsilon("1/3"))
        ('0.1', '1/3')
    """

    __slots__ = ()
    _symbol = "ε"
    _name = "epsilon"
    _json_description = "Privacy loss ε > 0: a number, a decimal string ('0.5', '1e-3') or a fraction ('1/3')."

    @classmethod
    def _check_input(cls, value: Fraction) -> None:
        if value <= 0:
            raise InvalidBudgetValue(f"epsilon must be greater than 0, got {_format(value)}")

    @classmethod
    def _check_result(cls, value: Fraction) -> None:
        if value < 0:
            raise InvalidBudgetValue(f"epsilon cannot be negative, got {_format(value)}")


class Delta(_Quantity):
    """The δ of (ε, δ)-differential privacy: exact, immutable, ``0 <= δ < 1``.

    Examples:
        >>> Delta("1e-6") == Delta("1/1000000")
        True
    """

    __slots__ = ()
    _symbol = "δ"
    _name = "delta"
    _json_description = "Failure probability 0 <= δ < 1: a number, a string ('1e-6') or a fraction ('1/1000000')."

    @classmethod
    def _check_input(cls, value: Fraction) -> None:
        if value < 0 or value >= 1:
            raise InvalidBudgetValue(f"delta must be at least 0 and less than 1, got {_format(value)}")

    @classmethod
    def _check_result(cls, value: Fraction) -> None:
        if value < 0 or value >= 1:
            raise InvalidBudgetValue(f"delta must stay at least 0 and below 1, got {_format(value)}")


# ---------------------------------------------------------------------------------------------
# The (ε, δ) pair
# ---------------------------------------------------------------------------------------------
class PrivacyBudget:
    """An (ε, δ) pair with exact, component-wise arithmetic.

    Ordering is the component-wise partial order: ``a <= b`` means ``a`` fits within ``b`` (both ε
    and δ are no larger). In a pydantic model it reads ``{epsilon: ..., delta: ...}`` (``delta``
    defaults to 0, pure ε-DP) and serializes to JSON as ``{"epsilon": "1/3", "delta": "1E-6"}``.

    Args:
        epsilon: ε, ``> 0`` (an :class:`Epsilon`, including ``Epsilon.zero()``, is taken as is).
        delta: δ, ``0 <= δ < 1``; default 0.

    Raises:
        InvalidBudgetValue: a value is out of range or not a number.
    """

    __slots__ = ("_delta", "_epsilon")
    _epsilon: Epsilon
    _delta: Delta

    def __init__(self, epsilon: RationalLike | Epsilon, delta: RationalLike | Delta = 0) -> None:
        object.__setattr__(self, "_epsilon", Epsilon(epsilon))
        object.__setattr__(self, "_delta", Delta(delta))

    @classmethod
    def zero(cls) -> PrivacyBudget:
        """The empty budget (ε = 0, δ = 0)."""
        return cls(Epsilon.zero(), Delta.zero())

    @classmethod
    def total(cls, budgets: Iterable[PrivacyBudget]) -> PrivacyBudget:
        """The exact component-wise sum of ``budgets`` (the empty budget for none)."""
        items = [_coerce_budget(b) for b in budgets]
        return cls(Epsilon.total(b.epsilon for b in items), Delta.total(b.delta for b in items))

    @property
    def epsilon(self) -> Epsilon:
        """ε."""
        return self._epsilon

    @property
    def delta(self) -> Delta:
        """δ."""
        return self._delta

    @property
    def is_zero(self) -> bool:
        """True when both ε and δ are zero."""
        return self._epsilon.is_zero and self._delta.is_zero

    def fits_within(self, other: PrivacyBudget) -> bool:
        """True when neither ε nor δ exceeds ``other``'s."""
        other = _coerce_budget(other)
        return self._epsilon <= other.epsilon and self._delta <= other.delta

    def portion(self, share: RationalLike) -> PrivacyBudget:
        """``share`` (``0 < share <= 1``) of this budget, exactly, in both ε and δ."""
        exact = to_fraction(share, "share")
        if not 0 < exact <= 1:
            raise InvalidBudgetValue(f"a share must be greater than 0 and at most 1, got {_format(exact)}")
        return PrivacyBudget(self._epsilon * exact, self._delta * exact)

    def split(self, weights: Mapping[K, RationalLike]) -> dict[K, PrivacyBudget]:
        """Split this budget in proportion to ``weights``; the shares add up exactly to the whole.

        Args:
            weights: Name (for example a query) -> positive weight (``1``, ``"2"``, ``"1/3"``, ...).
                Only the ratios matter: ``{"a": 1, "b": 2}`` and ``{"a": "1/3", "b": "2/3"}`` agree.

        Returns:
            Name -> share, in the order of ``weights``; ``PrivacyBudget.total(shares.values()) == self``.

        Raises:
            InvalidBudgetValue: no weights, or a weight that is not a positive number.
        """
        if not weights:
            raise InvalidBudgetValue("cannot split a budget into no shares")
        exact: dict[K, Fraction] = {}
        for name, weight in weights.items():
            value = to_fraction(weight, f"weight of {name!r}")
            if value <= 0:
                raise InvalidBudgetValue(f"weight of {name!r} must be greater than 0, got {_format(value)}")
            exact[name] = value
        whole = sum(exact.values(), Fraction(0))
        return {
            name: PrivacyBudget(self._epsilon * (value / whole), self._delta * (value / whole))
            for name, value in exact.items()
        }

    def split_evenly(self, parts: int) -> tuple[PrivacyBudget, ...]:
        """``parts`` equal shares that add up exactly to this budget."""
        if isinstance(parts, bool) or not isinstance(parts, int) or parts < 1:
            raise InvalidBudgetValue(f"parts must be a positive integer, got {parts!r}")
        share = PrivacyBudget(self._epsilon / parts, self._delta / parts)
        return (share,) * parts

    def to_dict(self) -> dict[str, str]:
        """JSON-safe exact form: ``{"epsilon": "1/3", "delta": "1E-6"}``."""
        return {"epsilon": str(self._epsilon), "delta": str(self._delta)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PrivacyBudget:
        """Parse ``{"epsilon": ..., "delta": ...}`` (``delta`` optional); other keys are refused."""
        if not isinstance(data, Mapping):
            raise InvalidBudgetValue(f"a privacy budget is a mapping with epsilon and delta, got {type(data).__name__}")
        unknown = sorted(str(k) for k in data if k not in ("epsilon", "delta"))
        if unknown:
            raise InvalidBudgetValue(f"a privacy budget has only epsilon and delta; unknown: {', '.join(unknown)}")
        if "epsilon" not in data:
            raise InvalidBudgetValue("a privacy budget needs an epsilon")
        return cls(data["epsilon"], data.get("delta", 0))

    # -- immutability, identity, text --------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("PrivacyBudget is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("PrivacyBudget is immutable")

    def __reduce__(self) -> tuple[Any, ...]:
        return (PrivacyBudget, (self._epsilon, self._delta))

    def __hash__(self) -> int:
        return hash((self._epsilon, self._delta))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PrivacyBudget):
            return self._epsilon == other._epsilon and self._delta == other._delta
        return NotImplemented

    def __le__(self, other: Any) -> bool:
        if not isinstance(other, PrivacyBudget):
            return NotImplemented
        return self.fits_within(other)

    def __ge__(self, other: Any) -> bool:
        if not isinstance(other, PrivacyBudget):
            return NotImplemented
        return other.fits_within(self)

    def __lt__(self, other: Any) -> bool:
        if not isinstance(other, PrivacyBudget):
            return NotImplemented
        return self.fits_within(other) and self != other

    def __gt__(self, other: Any) -> bool:
        if not isinstance(other, PrivacyBudget):
            return NotImplemented
        return other.fits_within(self) and self != other

    def __add__(self, other: Any) -> PrivacyBudget:
        if not isinstance(other, PrivacyBudget):
            return NotImplemented
        return PrivacyBudget(self._epsilon + other._epsilon, self._delta + other._delta)

    def __radd__(self, other: Any) -> PrivacyBudget:
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:
            return self
        return NotImplemented

    def __sub__(self, other: Any) -> PrivacyBudget:
        if not isinstance(other, PrivacyBudget):
            return NotImplemented
        return PrivacyBudget(self._epsilon - other._epsilon, self._delta - other._delta)

    def __str__(self) -> str:
        return f"(ε={self._epsilon}, δ={self._delta})"

    def __repr__(self) -> str:
        return f"PrivacyBudget(epsilon={str(self._epsilon)!r}, delta={str(self._delta)!r})"

    # -- pydantic ----------------------------------------------------------------------------
    @classmethod
    def _validate(cls, value: Any) -> PrivacyBudget:
        if isinstance(value, PrivacyBudget):
            return value
        return cls.from_dict(value)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        from pydantic_core import core_schema

        return core_schema.no_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda value: value.to_dict(), when_used="json"
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {
            "type": "object",
            "properties": {
                "epsilon": Epsilon.__get_pydantic_json_schema__(schema, handler),
                "delta": Delta.__get_pydantic_json_schema__(schema, handler),
            },
            "required": ["epsilon"],
            "additionalProperties": False,
            "description": "An (ε, δ) privacy budget; δ defaults to 0.",
        }


def _coerce_budget(value: Any) -> PrivacyBudget:
    if isinstance(value, PrivacyBudget):
        return value
    raise TypeError(f"expected PrivacyBudget, got {type(value).__name__}")
