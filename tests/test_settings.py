"""Settings validation through the real loader: a TOML file named by FAXRELAY_CONFIG plus FAXRELAY_*
environment variables, as an operator would configure faxrelay."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from config.accounts import PROVIDER_FIELDS
from config.settings import ConfigError, Settings, load_settings

# One valid account per provider, as the README's configuration example spells them.
SECRETS = {
    "auth": "pv-auth-SECRET-1f2e",
    "client_secret": "oauth-client-SECRET-9a8b",
    "api_password": "voipms-api-SECRET-7c6d",
    "token": "callerip-token-SECRET-5e4f",
    "webhook_token": "webhook-SECRET-3a2b",
}
VALID: dict[str, dict[str, Any]] = {
    "primevox": {
        "provider": "primevox",
        "base_url": "https://pbx.primevox.net",
        "webhook_token": SECRETS["webhook_token"],
        "auth": SECRETS["auth"],
        "container_id": "1001",
        "box_id": "2002",
    },
    "ucx": {
        "provider": "ucx",
        "base_url": "https://api.ucx.example",
        "webhook_token": SECRETS["webhook_token"],
        "client_id": "ucx-client",
        "client_secret": SECRETS["client_secret"],
        "fax_id": "fax-77",
    },
    "voipnow": {
        "provider": "voipnow",
        "base_url": "https://voipnow.example",
        "client_id": "vn-client",
        "client_secret": SECRETS["client_secret"],
        "user_id": "@me",
        "extension": "0003*210",
    },
    "voipms": {
        "provider": "voipms",
        "base_url": "https://voip.ms",
        "webhook_token": SECRETS["webhook_token"],
        "api_username": "ops@example.org",
        "api_password": SECRETS["api_password"],
        "from_number": "5145550100",
        "from_name": "Example Org",
        "station_id": "faxrelay",
    },
    "callerip": {
        "provider": "callerip",
        "base_url": "https://fax.callerip.example",
        "webhook_token": SECRETS["webhook_token"],
        "token": SECRETS["token"],
    },
}
REQUIRED = [
    (provider, field)
    for provider, fields in PROVIDER_FIELDS.items()
    for field, required in fields.items()
    if required
]
# A field that belongs to some other provider only, for each provider.
FOREIGN = {
    "primevox": ("fax_id", "x"),
    "ucx": ("box_id", "2002"),
    "voipnow": ("api_username", "someone"),
    "voipms": ("container_id", "1001"),
    "callerip": ("client_secret", "oops"),
}


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def toml_key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else toml_value(name)


def render(
    top: dict[str, Any] | None = None,
    accounts: dict[str, dict[str, Any]] | None = None,
    subscribers: list[dict[str, Any]] | None = None,
) -> str:
    lines = [f"{key} = {toml_value(value)}" for key, value in (top or {}).items()]
    for name, spec in (accounts or {}).items():
        lines.append(f"\n[accounts.{toml_key(name)}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in spec.items()]
    for sub in subscribers or []:
        lines.append("\n[[subscribers]]")
        lines += [f"{key} = {toml_value(value)}" for key, value in sub.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write a TOML config file, point FAXRELAY_CONFIG at it, and return the loader's result."""

    def write(text: str) -> Path:
        path = tmp_path / "faxrelay.toml"
        path.write_text(text)
        monkeypatch.setenv("FAXRELAY_CONFIG", str(path))
        return path

    return write


def load_error(text: str, config) -> str:
    config(text)
    with pytest.raises(ConfigError) as info:
        load_settings()
    return str(info.value)


# --- valid accounts ---------------------------------------------------------------------------


@pytest.mark.parametrize("provider", sorted(VALID))
def test_valid_example_account_loads(provider: str, config) -> None:
    config(render(accounts={"main": VALID[provider]}))
    settings = load_settings()
    account = settings.account("main")
    assert account.name == "main"
    assert account.provider == provider
    assert account.base_url == VALID[provider]["base_url"]
    for field in PROVIDER_FIELDS[provider]:
        assert account.secret(field) == VALID[provider].get(field, "")
    # Defaults from the contract.
    assert account.download_hosts == ()
    assert account.allow_private_network is False
    assert account.fallback_account == ""
    assert account.reconcile_interval == 300
    assert account.delete_after_archive is False


def test_all_five_accounts_in_one_file_with_fallback(config) -> None:
    accounts = {name: dict(spec) for name, spec in VALID.items()}
    accounts["primevox"]["fallback_account"] = "callerip"
    config(render(accounts=accounts))
    settings = load_settings()
    assert sorted(settings.accounts) == sorted(VALID)
    assert settings.account("primevox").fallback_account == "callerip"
    with pytest.raises(ConfigError, match="no account named 'nope'"):
        settings.account("nope")


def test_base_url_trailing_slash_removed_and_non_http_refused(config) -> None:
    config(render(accounts={"main": {**VALID["callerip"], "base_url": "https://x.example/api/"}}))
    assert load_settings().account("main").base_url == "https://x.example/api"
    text = load_error(
        render(accounts={"main": {**VALID["callerip"], "base_url": "ftp://x.example"}}), config
    )
    assert text.startswith("accounts.main.base_url: must be an http(s) URL")


# --- provider fields ----------------------------------------------------------------------


@pytest.mark.parametrize(("provider", "field"), REQUIRED, ids=[f"{p}-{f}" for p, f in REQUIRED])
def test_missing_required_provider_field(provider: str, field: str, config) -> None:
    spec = {k: v for k, v in VALID[provider].items() if k != field}
    text = load_error(render(accounts={"main": spec}), config)
    assert text == f'accounts.main: provider "{provider}" needs {field}'


@pytest.mark.parametrize(("provider", "field"), REQUIRED, ids=[f"{p}-{f}" for p, f in REQUIRED])
def test_empty_required_provider_field_counts_as_missing(provider: str, field: str, config) -> None:
    spec = {**VALID[provider], field: ""}
    text = load_error(render(accounts={"main": spec}), config)
    assert text == f'accounts.main: provider "{provider}" needs {field}'


@pytest.mark.parametrize("provider", sorted(FOREIGN))
def test_field_of_another_provider_is_refused(provider: str, config) -> None:
    field, value = FOREIGN[provider]
    text = load_error(render(accounts={"main": {**VALID[provider], field: value}}), config)
    assert text.startswith("accounts.main: ")
    assert f'{field} is not a setting of provider "{provider}"' in text
    # The message says what the provider does take.
    for own in PROVIDER_FIELDS[provider]:
        assert own in text


def test_unknown_account_key_is_named(config) -> None:
    text = load_error(render(accounts={"main": {**VALID["callerip"], "tokn": "abc"}}), config)
    assert "accounts.main.tokn" in text


def test_unknown_provider_is_refused(config) -> None:
    text = load_error(
        render(accounts={"main": {**VALID["callerip"], "provider": "faxomatic"}}), config
    )
    assert text.startswith("accounts.main.provider: ")
    assert "callerip" in text and "primevox" in text


def test_missing_provider_and_base_url(config) -> None:
    text = load_error(render(accounts={"main": {"token": "t"}}), config)
    assert "accounts.main.provider: Field required" in text
    assert "accounts.main.base_url: Field required" in text


# --- account names and fallbacks ----------------------------------------------------------


@pytest.mark.parametrize("name", ["main", "Main-2", "north_east", "0", "a-b_C9"])
def test_good_account_names(name: str, config) -> None:
    config(render(accounts={name: VALID["callerip"]}))
    assert load_settings().account(name).name == name


@pytest.mark.parametrize("name", ["has space", "dot.ted", "slash/ed", "", "ünïcode", "q?x=1"])
def test_bad_account_names(name: str, config) -> None:
    text = load_error(render(accounts={name: VALID["callerip"]}), config)
    assert text == f"accounts: account name {name!r} may hold only letters, digits, - and _"


def test_account_name_with_trailing_newline_is_refused(config) -> None:
    text = load_error(render(accounts={"main\n": VALID["callerip"]}), config)
    assert "may hold only letters, digits, - and _" in text


def test_fallback_account_that_does_not_exist(config) -> None:
    spec = {**VALID["primevox"], "fallback_account": "backup"}
    text = load_error(render(accounts={"main": spec}), config)
    assert text == "accounts.main: fallback_account 'backup' is not an account"


def test_fallback_account_cannot_be_itself(config) -> None:
    spec = {**VALID["primevox"], "fallback_account": "main"}
    text = load_error(render(accounts={"main": spec}), config)
    assert text == "accounts.main: fallback_account cannot be the account itself"


# --- sources ------------------------------------------------------------------------------


def test_defaults_without_any_config() -> None:
    settings = load_settings()
    assert settings.redis_url == ""
    assert settings.s3_bucket == "faxrelay"
    assert settings.s3_endpoint_url == ""
    assert settings.s3_prefix == ""
    assert settings.webhook_max_bytes == 25 * 1024 * 1024
    assert settings.api_tokens == ()
    assert settings.accounts == {}


def test_toml_top_level_keys_are_read(config) -> None:
    config(
        render(
            top={
                "redis_url": "redis://toml:6379/0",
                "s3_bucket": "from-toml",
                "s3_prefix": "pre/",
                "webhook_max_bytes": 1000,
                "callback_hosts": ["hooks.example.org"],
            }
        )
    )
    settings = load_settings()
    assert settings.redis_url == "redis://toml:6379/0"
    assert settings.s3_bucket == "from-toml"
    assert settings.s3_prefix == "pre/"
    assert settings.webhook_max_bytes == 1000
    assert settings.callback_hosts == ("hooks.example.org",)


def test_env_wins_over_toml(config, monkeypatch: pytest.MonkeyPatch) -> None:
    config(
        render(
            top={
                "redis_url": "redis://toml:6379/0",
                "s3_bucket": "from-toml",
                "webhook_max_bytes": 1000,
            },
            accounts={"main": VALID["callerip"]},
        )
    )
    monkeypatch.setenv("FAXRELAY_REDIS_URL", "redis://env:6379/1")
    monkeypatch.setenv("FAXRELAY_WEBHOOK_MAX_BYTES", "2048")
    settings = load_settings()
    assert settings.redis_url == "redis://env:6379/1"
    assert settings.webhook_max_bytes == 2048
    assert settings.s3_bucket == "from-toml"  # not overridden: the file's value stays
    assert "main" in settings.accounts


def test_api_tokens_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    one, two, three = "tok-one-4f1c9a2e", "tok-two-8d3b5c7a", "tok-three-6e2a1f0b"
    monkeypatch.setenv("FAXRELAY_API_TOKENS", f" {one} , {two},,{three} ")
    monkeypatch.setenv("FAXRELAY_CALLBACK_HOSTS", "a.example, b.example")
    settings = load_settings()
    assert settings.api_token_values == (one, two, three)
    assert settings.callback_hosts == ("a.example", "b.example")


def test_api_tokens_env_wins_over_toml_list(config, monkeypatch: pytest.MonkeyPatch) -> None:
    config(render(top={"api_tokens": ["toml-a-0e5c3b9d7f", "toml-b-7a2d4f6c1e"]}))
    assert load_settings().api_token_values == ("toml-a-0e5c3b9d7f", "toml-b-7a2d4f6c1e")
    monkeypatch.setenv("FAXRELAY_API_TOKENS", "env-a-3c8e1b5f9d")
    assert load_settings().api_token_values == ("env-a-3c8e1b5f9d",)


def test_bad_env_value_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAXRELAY_WEBHOOK_MAX_BYTES", "lots")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).startswith("webhook_max_bytes: ")


def test_unknown_top_level_key_is_refused(config) -> None:
    text = load_error(render(top={"redis_uri": "redis://x"}), config)
    assert text.startswith("redis_uri: ")


def test_subscribers(config) -> None:
    config(
        render(
            subscribers=[
                {"url": "https://a.example/hook", "secret": "whsec_AAAA", "types": ["fax.failed"]},
                {"url": "https://b.example/hook", "secret": "whsec_BBBB"},
            ]
        )
    )
    settings = load_settings()
    first, second = settings.subscribers
    assert first.wants("fax.failed") and not first.wants("fax.delivered")
    assert second.wants("fax.delivered")
    assert first.secret.get_secret_value() == "whsec_AAAA"


GOOD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_good_subscriber_forms_load(config) -> None:
    subscribers = [
        {"url": "https://a.example/hook", "secret": GOOD_SECRET, "types": ["fax.received"]},
        # Bare base64 is what the reference library (and faxrelay's signing) reads too.
        {"url": "http://127.0.0.1:8080/events", "secret": GOOD_SECRET.removeprefix("whsec_")},
    ]
    config(render(subscribers=subscribers))
    assert [s.url for s in load_settings().subscribers] == [s["url"] for s in subscribers]


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("secret", "whsec_abc", "secret must be whsec_ followed by base64"),
        ("secret", "s3cr3t-for-acme", "secret must be whsec_ followed by base64"),
        ("secret", "whsec_", "secret must be whsec_ followed by base64"),
        ("secret", "whsec_ab-cd", "secret must be whsec_ followed by base64"),
        ("url", "ftp://a.example/hook", "url must be an http(s) URL with a host"),
        ("url", "a.example/hook", "url must be an http(s) URL with a host"),
        ("url", "https:///hook", "url must be an http(s) URL with a host"),
        ("types", ["fax.failed", "fax.recieved"], "unknown event type 'fax.recieved' (known: "),
    ],
)
def test_bad_subscriber_is_refused_naming_it(field: str, value: Any, problem: str, config) -> None:
    good = {"url": "https://b.example/hook", "secret": GOOD_SECRET}
    bad = {"url": "https://a.example/hook", "secret": GOOD_SECRET, field: value}
    text = load_error(render(subscribers=[good, bad]), config)
    assert text.startswith(f"subscribers.1: subscriber {bad['url']!r}: {problem}")
    assert GOOD_SECRET.removeprefix("whsec_") not in text
    if field == "secret" and value != "whsec_":
        assert value.removeprefix("whsec_") not in text


def test_subscriber_with_several_problems_lists_them_all(config) -> None:
    bad = {"url": "mailto:ops@example.org", "secret": "s3cr3t", "types": ["fax.sent"]}
    text = load_error(render(subscribers=[bad]), config)
    assert text.startswith("subscribers.0: subscriber 'mailto:ops@example.org': url must be")
    assert "; secret must be whsec_" in text and "; unknown event type 'fax.sent'" in text


@pytest.mark.parametrize("value", ["whsec_abc", "s3cr3t-for-acme"])
def test_event_secret_that_is_not_base64_is_refused(value: str, monkeypatch) -> None:
    monkeypatch.setenv("FAXRELAY_EVENT_SECRET", value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert (
        str(info.value)
        == "event_secret: must be whsec_ followed by base64 (a Standard Webhooks secret)"
    )


def test_event_secret_good_or_empty(monkeypatch) -> None:
    monkeypatch.setenv("FAXRELAY_EVENT_SECRET", GOOD_SECRET)
    secret = load_settings().event_secret
    assert secret is not None and secret.get_secret_value() == GOOD_SECRET
    # compose.yaml passes an unset variable as "": no secret, not an empty key.
    monkeypatch.setenv("FAXRELAY_EVENT_SECRET", "")
    assert load_settings().event_secret is None


# --- errors about the file itself ------------------------------------------------------------


def test_missing_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "nowhere.toml"
    monkeypatch.setenv("FAXRELAY_CONFIG", str(path))
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value) == f"FAXRELAY_CONFIG names {path}, which does not exist"


def test_invalid_toml(config) -> None:
    path = config('redis_url = "redis://x"\n[accounts.main\nprovider = "ucx"\n')
    with pytest.raises(ConfigError) as info:
        load_settings()
    text = str(info.value)
    assert text.startswith(f"{path} is not valid TOML: ")
    assert "line 2" in text  # says where


@pytest.mark.parametrize("kind", ["directory", "not-utf8"])
def test_unreadable_config_file_gives_config_error(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "faxrelay.toml"
    if kind == "directory":
        path.mkdir()
    else:
        path.write_bytes(b'redis_url = "\xff\xfe"\n')
    monkeypatch.setenv("FAXRELAY_CONFIG", str(path))
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(path) in str(info.value)


# --- secrets never shown ------------------------------------------------------------------


def all_secret_values() -> list[str]:
    return [*SECRETS.values(), "api-tok-SECRET-a", "api-tok-SECRET-b", "whsec_EVENTSECRET0"]


def secret_setup(config, monkeypatch: pytest.MonkeyPatch, **extra: Any) -> None:
    accounts = {name: {**spec, **extra} for name, spec in VALID.items()}
    config(
        render(
            accounts=accounts,
            subscribers=[{"url": "https://sub.example/hook", "secret": "whsec_SUBSCRIBERSECRET"}],
        )
    )
    monkeypatch.setenv("FAXRELAY_API_TOKENS", "api-tok-SECRET-a,api-tok-SECRET-b")
    monkeypatch.setenv("FAXRELAY_EVENT_SECRET", "whsec_EVENTSECRET0")


def test_secrets_not_in_repr_or_str(config, monkeypatch: pytest.MonkeyPatch) -> None:
    secret_setup(config, monkeypatch)
    settings = load_settings()
    shown = [repr(settings), str(settings)]
    shown += [repr(a) for a in settings.accounts.values()]
    shown += [str(a) for a in settings.accounts.values()]
    shown += [repr(s) for s in settings.subscribers]
    for text in shown:
        for secret in [*all_secret_values(), "whsec_SUBSCRIBERSECRET"]:
            assert secret not in text
    # ... while the values are still there for the code that needs them.
    assert settings.account("primevox").secret("auth") == SECRETS["auth"]
    assert settings.account("voipms").secret("api_password") == SECRETS["api_password"]
    assert settings.account("ucx").webhook_token is not None
    assert settings.account("ucx").webhook_token.get_secret_value() == SECRETS["webhook_token"]
    assert settings.api_token_values == ("api-tok-SECRET-a", "api-tok-SECRET-b")


def test_secrets_not_in_config_error(config, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every account invalid (an unknown key, a bad interval), plus a bad subscriber, so the
    # error talks about all of them while the secrets are in the input.
    secret_setup(config, monkeypatch, reconcile_interval=-1, bogus="x")
    monkeypatch.setenv("FAXRELAY_WEBHOOK_MAX_BYTES", "-5")
    with pytest.raises(ConfigError) as info:
        load_settings()
    text = str(info.value)
    for name in VALID:
        assert f"accounts.{name}.reconcile_interval" in text
        assert f"accounts.{name}.bogus" in text
    assert "webhook_max_bytes" in text
    for secret in [*all_secret_values(), "whsec_SUBSCRIBERSECRET"]:
        assert secret not in text


def test_secret_fields_of_wrong_type_do_not_leak(config) -> None:
    # A secret given where a different provider expects it, and a subscriber with an extra key.
    spec = {**VALID["callerip"], "auth": "leaky-SECRET-auth"}
    config(
        render(
            accounts={"main": spec},
            subscribers=[
                {"url": "https://s.example", "secret": "whsec_LEAKY", "extra": "whsec_LEAKY2"}
            ],
        )
    )
    with pytest.raises(ConfigError) as info:
        load_settings()
    text = str(info.value)
    assert "auth is not a setting of provider" in text
    assert "subscribers.0.extra" in text
    for secret in ("leaky-SECRET-auth", "whsec_LEAKY", SECRETS["token"], SECRETS["webhook_token"]):
        assert secret not in text


def test_settings_are_frozen(config) -> None:
    config(render(accounts={"main": VALID["callerip"]}))
    settings = load_settings()
    assert isinstance(settings, Settings)
    with pytest.raises(Exception, match="frozen"):
        settings.redis_url = "redis://elsewhere"  # type: ignore[misc]
