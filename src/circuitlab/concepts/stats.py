"""The statistics TCAV's significance test needs, without SciPy: Student's t-test for two independent samples.

The two-sided p-value of a t statistic with ``df`` degrees of freedom is the regularized incomplete beta function
``I_x(df / 2, 1 / 2)`` at ``x = df / (df + t**2)`` (Abramowitz & Stegun 26.7.1 with 26.5.27). :func:`betainc`
evaluates ``I_x(a, b)`` by its continued fraction (A&S 26.5.8) with the modified Lentz method, using the symmetry
``I_x(a, b) = 1 - I_{1-x}(b, a)`` where the fraction converges slowly (``x > (a + 1) / (a + b + 2)``), as in
*Numerical Recipes* (section 6.4). Accurate to about 1e-13 relative.
"""

from __future__ import annotations

import math
from typing import Sequence

from circuitlab.core import shorten
from circuitlab.errors import InputError

_TINY = 1e-300
_EPS = 1e-15


def _beta_fraction(a: float, b: float, x: float, max_iter: int = 10_000) -> float:
    """The continued fraction of ``I_x(a, b)`` (A&S 26.5.8), by the modified Lentz method."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, max_iter + 1):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + num / c
            c = c if abs(c) > _TINY else _TINY
            h *= d * c
        if abs(d * c - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"the incomplete beta fraction did not converge for a={a}, b={b}, x={x}")  # pragma: no cover


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function ``I_x(a, b)`` for ``a, b > 0`` and ``0 <= x <= 1``."""
    if not (a > 0 and b > 0):
        raise InputError(f"betainc needs a > 0 and b > 0; got a={shorten(a)}, b={shorten(b)}.")
    if not 0.0 <= x <= 1.0:
        raise InputError(f"betainc needs 0 <= x <= 1; got x={shorten(x)}.")
    if x == 0.0 or x == 1.0:
        return x
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """``P(|T| >= |t|)`` for Student's t distribution with ``df`` degrees of freedom."""
    if not df > 0:
        raise InputError(f"degrees of freedom must be positive; got df={shorten(df)}.")
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 0.0
    return min(1.0, betainc(df / 2.0, 0.5, df / (df + t * t)))


def ttest_ind(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Student's two-sample t-test (equal variances, as ``scipy.stats.ttest_ind`` by default), two-sided.

    Returns ``(t, p)``. Where both samples have zero variance, ``t`` is ``0`` with ``p = 1`` if their means are
    equal and ``+-inf`` with ``p = 0`` otherwise (SciPy would give NaN: no variance to compare against).
    """
    a, b = [float(v) for v in a], [float(v) for v in b]
    n1, n2 = len(a), len(b)
    if n1 < 2 or n2 < 2:
        raise InputError(f"a t-test needs at least 2 values in each sample; got {n1} and {n2}. Use more runs.")
    m1, m2 = sum(a) / n1, sum(b) / n2
    ss = sum((v - m1) ** 2 for v in a) + sum((v - m2) ** 2 for v in b)
    df = n1 + n2 - 2
    se = math.sqrt(ss / df * (1.0 / n1 + 1.0 / n2))
    if se == 0.0:
        if m1 == m2:
            return 0.0, 1.0
        return math.copysign(math.inf, m1 - m2), 0.0
    t = (m1 - m2) / se
    return t, t_two_sided_p(t, df)


__all__ = ["betainc", "t_two_sided_p", "ttest_ind"]
