"""Resource quantities as the apiserver stores them: canonical (`8000` -> `8k`).

Kubernetes parses every quantity when it decodes an object and writes it back in
canonical form (`resource.Quantity.String`): the suffix family of the input (binary `Ki`
... `Ei`; decimal `n` ... `E` or none; an exponent `e3`) is kept, and the number is
written with the largest suffix of that family that leaves an integer. A binary quantity
below 1024, or with a fraction, is written in decimal. Values are rounded up to nano
units. Exponent forms are kept as given. Input that does not parse is left alone (the
emulator does not validate quantities).
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, Decimal, InvalidOperation

_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_SUFFIX_OF_EXPONENT = {e: s for s, e in _DECIMAL.items()}
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]?)$")


def canonical(value: object) -> object:
    """The stored form of one quantity (a str or a number); anything else unchanged."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return value
    text = str(value).strip()
    found = _QUANTITY.match(text)
    if not found:
        return value
    try:
        number = Decimal(found.group(1))
    except InvalidOperation:
        return value
    suffix = found.group(2)
    if suffix in _BINARY:
        amount = number * (Decimal(2) ** _BINARY[suffix])
        if amount == amount.to_integral_value() and abs(amount) >= 1024:
            return _binary(int(amount))
    else:
        amount = number * (Decimal(10) ** _DECIMAL[suffix])
    return _decimal(amount)


def _binary(amount: int) -> str:
    best = ("", 0)
    for suffix, power in _BINARY.items():
        if amount % (1 << power) == 0:
            best = (suffix, power)
    suffix, power = best
    return f"{amount >> power}{suffix}"


def _decimal(amount: Decimal) -> str:
    nanos = (amount * Decimal(10) ** 9).to_integral_value(rounding=ROUND_CEILING)
    if nanos == 0:
        return "0"
    exponent = -9
    while exponent < 18 and nanos % 1000 == 0:
        nanos //= 1000
        exponent += 3
    return f"{int(nanos)}{_SUFFIX_OF_EXPONENT[exponent]}"


def canonical_map(resources: object) -> None:
    """Canonicalise every quantity of a `{name: quantity}` mapping in place."""
    if isinstance(resources, dict):
        for name, quantity in list(resources.items()):
            resources[name] = canonical(quantity)


__all__ = ["canonical", "canonical_map"]
