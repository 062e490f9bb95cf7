"""``faxrelay config``: check the configuration before starting anything with it.

Exit 2 when it is invalid, like every command that cannot load it.
"""

from __future__ import annotations

import click

from config.settings import ConfigError, load_settings


@click.group("config")
def config_group() -> None:
    """Configuration."""


@config_group.command("check")
def config_check() -> None:
    """Load and validate the configuration; say what is wrong."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        click.echo(f"configuration is invalid:\n{exc}", err=True)
        raise SystemExit(2) from None
    click.echo(f"configuration is valid: {len(settings.accounts)} account(s)")
    for name, account in settings.accounts.items():
        click.echo(f"  {name}: {account.provider} at {account.base_url}")
