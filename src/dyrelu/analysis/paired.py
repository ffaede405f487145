"""Two classifiers on the same test images: is their difference in accuracy more than the luck of the test set?

A seed-to-seed spread says how much training randomness moves a network's accuracy on one fixed test set; it says
nothing about the test set itself. Two networks scored on the same images differ only where one is right and the
other wrong; if neither were better, each of those images would be as likely to favour one as the other.
McNemar's exact test asks how surprising the observed split is under that coin flip.

Example:
    >>> import torch
    >>> c = paired_comparison(torch.tensor([1, 1, 1, 0, 1]), torch.tensor([1, 0, 0, 0, 1]))
    >>> (c.count, c.both, c.only_a, c.only_b, round(c.diff, 1), c.p_value)
    (5, 2, 2, 0, 40.0, 0.5)
"""

from __future__ import annotations

import base64
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

__all__ = ["PairedComparison", "mcnemar_p", "pack_correct", "paired_comparison", "unpack_correct"]


def mcnemar_p(only_a: int, only_b: int) -> float:
    """The exact two-sided p-value of McNemar's test: the chance of a split of the discordant images at least as
    uneven as ``only_a`` to ``only_b`` when each one favours either network with probability 1/2.

    Example:
        >>> mcnemar_p(5, 0)  # five images, all for A: 2 × (1/2)**5
        0.0625
        >>> mcnemar_p(3, 3)
        1.0
    """
    if only_a < 0 or only_b < 0:
        raise ValueError(f"expected counts of images >= 0, got {only_a} and {only_b}")
    n = only_a + only_b
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1))
    return min(1.0, 2 * tail / 2**n)  # exact integers; the division is correctly rounded


@dataclass(frozen=True)
class PairedComparison:
    """How two networks A and B fare on the same ``count`` test images.

    ``both``: right in both; ``only_a``: right in A and wrong in B; ``only_b``: the other way round.
    """

    count: int
    both: int
    only_a: int
    only_b: int

    @property
    def acc_a(self) -> float:
        """A's top-1 accuracy (percent)."""
        return 100.0 * (self.both + self.only_a) / self.count

    @property
    def acc_b(self) -> float:
        """B's top-1 accuracy (percent)."""
        return 100.0 * (self.both + self.only_b) / self.count

    @property
    def diff(self) -> float:
        """A's accuracy minus B's, in percentage points."""
        return 100.0 * (self.only_a - self.only_b) / self.count

    @property
    def p_value(self) -> float:
        """:func:`mcnemar_p` of the discordant images: small when the difference is unlikely to be luck."""
        return mcnemar_p(self.only_a, self.only_b)

    def to_dict(self) -> dict[str, Any]:
        """The counts with the accuracies, the difference and the p-value (for JSON)."""
        return {**asdict(self), "acc_a": self.acc_a, "acc_b": self.acc_b, "diff": self.diff, "p_value": self.p_value}

    def summary(self, a: str = "A", b: str = "B") -> str:
        """One line: the discordant images, the difference and the p-value."""
        return (
            f"on the same {self.count} images: {a} right where {b} is wrong {self.only_a}, the other way round "
            f"{self.only_b}; {a} - {b} = {self.diff:+.2f} pp, exact McNemar p = {self.p_value:.3g}"
        )


def paired_comparison(correct_a: torch.Tensor, correct_b: torch.Tensor) -> PairedComparison:
    """Compare two networks from whether each got each test image right (same images, same order).

    Raises:
        ValueError: the two hold a different number of images, or none.
    """
    a = torch.as_tensor(correct_a).bool().flatten()
    b = torch.as_tensor(correct_b).bool().flatten()
    if a.numel() != b.numel() or a.numel() == 0:
        raise ValueError(f"expected the same images, at least one, for both networks, got {a.numel()} and {b.numel()}")
    return PairedComparison(
        count=a.numel(),
        both=int((a & b).sum()),
        only_a=int((a & ~b).sum()),
        only_b=int((~a & b).sum()),
    )


def pack_correct(correct: torch.Tensor) -> str:
    """Whether a network got each image right, as text: one bit per image (the first image in the lowest bit of the
    first byte), base64-encoded; 10,000 images take 1,668 characters. :func:`unpack_correct` reverses it.

    Example:
        >>> pack_correct(torch.tensor([True, False, True]))
        'BQ=='
    """
    bits = torch.as_tensor(correct).bool().flatten()
    padded = torch.zeros(-(-bits.numel() // 8) * 8, dtype=torch.int64)
    padded[: bits.numel()] = bits.long()
    weights = 2 ** torch.arange(8, dtype=torch.int64)
    data = bytes((padded.view(-1, 8) * weights).sum(1).tolist())
    return base64.b64encode(data).decode("ascii")


def unpack_correct(text: str, count: int) -> torch.Tensor:
    """The ``count`` booleans that :func:`pack_correct` wrote as ``text``.

    Raises:
        ValueError: ``text`` is not base64, or holds another number of bytes than ``count`` images need, or sets
            a bit past the last image.
    """
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as err:
        raise ValueError(f"expected the base64 text of pack_correct, got {text[:20]!r}...: {err}") from None
    if count < 0 or len(data) != -(-count // 8):
        raise ValueError(f"expected {-(-max(count, 0) // 8)} bytes for {count} images, got {len(data)}")
    values = torch.tensor(list(data), dtype=torch.int64)
    bits = ((values.view(-1, 1) >> torch.arange(8, dtype=torch.int64)) & 1).flatten().bool()
    if bits[count:].any():
        raise ValueError(f"the packed text sets bits past its {count} images")
    return bits[:count]
