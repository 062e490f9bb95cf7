"""API tokens with names (``name:token`` in FAXRELAY_API_TOKENS): the name is what the audit
log says acted, the token alone is the secret; bare tokens keep working, named by their place.
"""

from __future__ import annotations

import pytest

from config.settings import ConfigError, load_settings


def test_named_and_bare_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "FAXRELAY_API_TOKENS",
        "ops:tok-ops-1-0123456789, plain-tok-2-0123456789 ,ci-bot:tok:with:colons:01234",
    )
    settings = load_settings()
    assert settings.api_token_names == (
        ("ops", "tok-ops-1-0123456789"),
        ("token-2", "plain-tok-2-0123456789"),
        ("ci-bot", "tok:with:colons:01234"),
    )
    # The secrets are the tokens alone: what a bearer header, a dashboard login and the log
    # redaction see.
    assert settings.api_token_values == (
        "tok-ops-1-0123456789", "plain-tok-2-0123456789", "tok:with:colons:01234",
    )  # fmt: skip


def test_a_name_used_twice_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAXRELAY_API_TOKENS", "ops:one-0123456789abcdef,ops:two-0123456789abcdef")
    with pytest.raises(ConfigError, match=r"api_tokens: the name\(s\) ops are used twice"):
        load_settings()
