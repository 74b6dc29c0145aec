"""Attack budgets (epsilon) in [0, 1] pixel space: parsing from the command line and display as ``k/255``."""
from __future__ import annotations

from fractions import Fraction
from typing import Iterable

from benchmark.core.errors import BenchError


def parse_eps(text: str) -> float:
    """``8/255`` or ``0.0314`` to a float in [0, 1]; anything else is a :class:`BenchError`."""
    raw = text.strip()
    try:
        if "/" in raw:
            num, den = raw.split("/")  # exactly one '/': "8/255/2" is malformed, not 16/255
            value = Fraction(num.strip()) / Fraction(den.strip())
        else:
            value = Fraction(raw)
    except (ValueError, ZeroDivisionError):
        raise BenchError(f"malformed budget {text!r}; write a fraction such as 8/255 or a number such as 0.0314") from None
    if value < 0:
        raise BenchError(f"budget {text!r} is negative; budgets lie in [0, 1], e.g. 8/255")
    if value > 1:
        hint = (f"; did you mean {raw}/255?" if "/" not in raw and value <= 255
                else "; in 255ths write k/255 with k from 0 to 255")
        raise BenchError(f"budget {text!r} is above 1: budgets are in [0, 1] pixel space{hint}")
    return float(value)


def parse_eps_list(values: Iterable[str]) -> tuple[float, ...]:
    """Repeatable, comma-separated budgets, sorted and without duplicates."""
    parsed = {parse_eps(part) for value in values for part in value.split(",") if part.strip()}
    if not parsed:
        raise BenchError("no budget given; use e.g. --eps 8/255,25/255")
    return tuple(sorted(parsed))


def format_eps(eps: float, norm: str = "linf") -> str:
    """``0.03137...`` as ``8/255`` when it is a whole number of 255ths, else a short decimal. Budgets in another norm
    than L-infinity (pgd-l2's L2 radii) are not pixel values: always a short decimal."""
    if norm != "linf":
        return f"{eps:.4g}"
    k = eps * 255
    if abs(k - round(k)) < 1e-6:
        return f"{int(round(k))}/255"
    return f"{eps:.4g}"
