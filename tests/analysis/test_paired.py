"""The paired comparison of two networks on the same test images (McNemar's exact test)."""

from __future__ import annotations

import math

import pytest
import torch

from dyrelu.analysis.paired import PairedComparison, mcnemar_p, pack_correct, paired_comparison, unpack_correct


def _binomial_two_sided(k: int, n: int) -> float:
    """The two-sided tail by brute force over every split of n images: P(|X - n/2| >= |k - n/2|), X ~ Bin(n, 1/2)."""
    return sum(math.comb(n, i) for i in range(n + 1) if abs(i - n / 2) >= abs(k - n / 2)) / 2**n


def test_mcnemar_p_matches_hand_computed_values():
    assert mcnemar_p(0, 0) == 1.0  # no image tells the two apart
    assert mcnemar_p(5, 0) == mcnemar_p(0, 5) == 2 / 32
    assert mcnemar_p(10, 2) == pytest.approx(2 * (1 + 12 + 66) / 4096)
    assert mcnemar_p(6, 6) == 1.0
    for a, b in [(7, 3), (30, 12), (200, 160), (1, 0)]:
        assert mcnemar_p(a, b) == pytest.approx(min(1.0, _binomial_two_sided(a, a + b)))
    assert mcnemar_p(400, 300) < 2e-4 < mcnemar_p(400, 340)  # exact for large counts too (big integers)
    with pytest.raises(ValueError, match="got -1 and 3"):
        mcnemar_p(-1, 3)


def test_paired_comparison_counts_the_images_each_network_alone_gets_right():
    a = torch.tensor([True, True, False, True, False, True])
    b = torch.tensor([True, False, True, True, False, False])
    c = paired_comparison(a, b)
    assert c == PairedComparison(count=6, both=2, only_a=2, only_b=1)
    assert c.acc_a == pytest.approx(400 / 6) and c.acc_b == pytest.approx(50.0)
    assert c.diff == pytest.approx(100 / 6) and c.p_value == 1.0
    assert c.to_dict()["diff"] == c.diff and c.to_dict()["only_b"] == 1
    assert "right where B is wrong 2, the other way round 1" in c.summary() and "+16.67 pp" in c.summary()
    assert paired_comparison(b, a).diff == -c.diff
    with pytest.raises(ValueError, match="got 6 and 5"):
        paired_comparison(a, b[:5])


@pytest.mark.parametrize("count", [0, 1, 7, 8, 9, 10_000])
def test_pack_correct_round_trips_and_is_one_bit_per_image(count):
    correct = torch.rand(count, generator=torch.Generator().manual_seed(count)) < 0.9
    text = pack_correct(correct)
    nbytes = math.ceil(count / 8)
    assert len(text) == 4 * math.ceil(nbytes / 3)  # base64 of one bit per image
    assert torch.equal(unpack_correct(text, count), correct)


def test_pack_correct_puts_the_first_image_in_the_lowest_bit():
    assert pack_correct(torch.tensor([True] + [False] * 7 + [False, True])) == "AQI="  # bytes 0b1, 0b10
    assert unpack_correct("AQI=", 10).tolist() == [True] + [False] * 8 + [True]


def test_unpack_correct_refuses_text_that_does_not_fit():
    with pytest.raises(ValueError, match="expected 2 bytes for 9 images, got 1"):
        unpack_correct(pack_correct(torch.ones(8, dtype=torch.bool)), 9)
    with pytest.raises(ValueError, match="past its 3 images"):
        unpack_correct(pack_correct(torch.ones(8, dtype=torch.bool)), 3)
    with pytest.raises(ValueError, match="base64"):
        unpack_correct("not base64!", 8)
