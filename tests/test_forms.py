"""worker/forms.py reads form bodies and query strings exactly as the standard library does."""

from __future__ import annotations

import random
from urllib.parse import parse_qs, parse_qsl, urlencode

import pytest

from worker.fastpath.forms import parse_form, query_value


def _unwrapped(parsed: dict[str, list[str]]) -> dict[str, str | list[str]]:
    return {name: values[0] if len(values) == 1 else values for name, values in parsed.items()}


CASES = [
    "",
    "a=1",
    "a=1&b=2&a=3",
    "a=&b",
    "a=1&&b=2&",
    "&&",
    "=x",
    "key=a%20b+c%2Bd",
    "na%6De=v&name=w",
    "fileUrl=https%3A%2F%2Fh.example%2Fd.php%3Fid%3D7%26k%3Dz",
    "x=%E2%9C%93&y=%ZZ&z=%",
    "caf%C3%A9=cr%C3%A8me+br%C3%BBl%C3%A9e",
    "a==b&c=d=e",
    "bad=%FF%FE",
    "back=a\\x41%41\\\\&nul=%00&raw=\x00",
    "split=%E2%9C&next=%93",
    urlencode({"containerId": "C-1", "receivedAt": "2025-06-01 12:00:00", "to": "+1 555"}),
]


@pytest.mark.parametrize("text", CASES)
def test_parse_form_matches_parse_qs(text: str) -> None:
    assert parse_form(text) == _unwrapped(parse_qs(text, keep_blank_values=True))


@pytest.mark.parametrize("ascii_only", [True, False])
def test_parse_form_matches_parse_qs_on_random_text(ascii_only: bool) -> None:
    rng = random.Random(20261123)
    alphabet = "ab=&+%%2F0Fz éC3A9x\\\x00"
    if ascii_only:
        alphabet = alphabet.replace("é", "")
    for _ in range(20000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 30)))
        assert parse_form(text) == _unwrapped(parse_qs(text, keep_blank_values=True)), text


@pytest.mark.parametrize(
    "query",
    [
        "",
        "token=abc",
        "x=1&token=abc&token=def",
        "token=&token=abc",
        "token",
        "%74oken=abc",
        "tok%65n=a%2Bb+c",
        "token2=abc",
        "xtoken=abc&y=1",
        "token=a=b",
    ],
)
def test_query_value_matches_parse_qsl(query: str) -> None:
    expected = next((v for k, v in parse_qsl(query) if k == "token"), "")
    assert query_value(query, "token") == expected
