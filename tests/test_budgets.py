"""Attack budgets: parsing ``--eps`` values and showing them as ``k/255``."""
from __future__ import annotations

import pytest

from benchmark.core.budgets import format_eps, parse_eps, parse_eps_list
from benchmark.core.errors import BenchError


@pytest.mark.parametrize(
    "text, expected",
    [
        ("8/255", 8 / 255),
        (" 8 / 255 ", 8 / 255),
        ("25/255", 25 / 255),
        ("0.0314", 0.0314),
        ("0", 0.0),
        ("1", 1.0),
        ("255/255", 1.0),
        ("1e-2", 0.01),
    ],
)
def test_parse_eps_accepts_fractions_and_decimals(text: str, expected: float) -> None:
    value = parse_eps(text)
    assert isinstance(value, float)
    assert value == pytest.approx(expected, rel=0, abs=1e-15)


def test_parse_eps_fraction_is_exact() -> None:
    # 8/255 is computed as a Fraction, so it is the float closest to 8/255, exactly as Python's division gives it
    assert parse_eps("8/255") == 8 / 255
    assert parse_eps("16/255") == 16 / 255


@pytest.mark.parametrize(
    "text, words",
    [
        ("8/0", ["malformed", "8/255"]),
        ("abc", ["malformed", "8/255", "0.0314"]),
        ("", ["malformed"]),
        ("8/", ["malformed"]),
        ("/255", ["malformed"]),
        ("nan", ["malformed"]),
        ("-1", ["negative", "[0, 1]"]),
        ("-8/255", ["negative"]),
        ("1.5", ["above 1", "[0, 1]"]),
        ("8", ["above 1", "8/255"]),
    ],
)
def test_parse_eps_rejects_with_a_helpful_message(text: str, words: list[str]) -> None:
    with pytest.raises(BenchError) as info:
        parse_eps(text)
    message = str(info.value)
    assert "\n" not in message
    assert repr(text) in message  # names the offending value
    for word in words:
        assert word in message


def test_parse_eps_suggests_255ths_for_a_plausible_pixel_count() -> None:
    with pytest.raises(BenchError, match=r"did you mean 8/255\?"):
        parse_eps("8")
    with pytest.raises(BenchError, match=r"did you mean 255/255\?"):
        parse_eps("255")


def test_parse_eps_300_is_rejected_without_suggesting_an_invalid_budget() -> None:
    with pytest.raises(BenchError) as info:
        parse_eps("300")
    message = str(info.value)
    assert "above 1" in message and "[0, 1]" in message
    # 300/255 is itself above 1: suggesting it would send the user into a second error
    assert "did you mean 300/255" not in message


def test_parse_eps_300_still_mentions_the_255ths_form() -> None:
    with pytest.raises(BenchError, match="/255"):
        parse_eps("300")


@pytest.mark.parametrize("text", ["8/255/2", "1/2/3"])
def test_parse_eps_rejects_two_slashes_as_malformed(text: str) -> None:
    with pytest.raises(BenchError, match="malformed"):
        parse_eps(text)


def test_parse_eps_list_repeats_commas_sorting_dedup() -> None:
    assert parse_eps_list(["25/255,8/255", "8/255", " 16/255 , 8/255"]) == (8 / 255, 16 / 255, 25 / 255)
    assert parse_eps_list(["0.1", "0.05,0.1"]) == (0.05, 0.1)
    # the same budget written two ways is one budget
    assert parse_eps_list(["1/2", "0.5"]) == (0.5,)
    # empty items between commas are ignored
    assert parse_eps_list(["8/255,,", ",25/255"]) == (8 / 255, 25 / 255)


def test_parse_eps_list_errors() -> None:
    with pytest.raises(BenchError, match="no budget"):
        parse_eps_list([])
    with pytest.raises(BenchError, match="no budget"):
        parse_eps_list([",", " "])
    with pytest.raises(BenchError, match="'8/0'"):
        parse_eps_list(["8/255,8/0"])


@pytest.mark.parametrize(
    "eps, text",
    [
        (8 / 255, "8/255"),
        (25 / 255, "25/255"),
        (2 / 255, "2/255"),
        (1.0, "255/255"),
        (0.0314, "0.0314"),
        (0.1, "0.1"),
        (0.123456789, "0.1235"),
    ],
)
def test_format_eps(eps: float, text: str) -> None:
    assert format_eps(eps) == text


def test_format_eps_roundtrips_every_255th() -> None:
    for k in range(256):
        text = format_eps(parse_eps(f"{k}/255"))
        assert text == f"{k}/255"
        assert parse_eps(text) == parse_eps(f"{k}/255")
