"""The ``faxrelay`` command. It sits on top of everything (web app, worker, sandbox), so it lives
in the top package of the dependency chain.

One module per command group; what they share is in ``common``. Each command imports the worker
code it needs when it runs, so ``faxrelay --help`` stays quick.

Exit codes: 0 success, 1 the operation failed, 2 bad usage or configuration.
"""

from __future__ import annotations

import click

from webhooks.cli import accounts, backfill, configuration, events, faxes, send, up, webhooks
from webhooks.cli.remote import Target


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="faxrelay", prog_name="faxrelay", message="%(prog)s %(version)s")
@click.option(
    "--url", envvar="FAXRELAY_URL", default="", metavar="URL",
    help="Work over the API of the faxrelay at URL (remote mode) [env: FAXRELAY_URL].",
)  # fmt: skip
@click.option(
    "--token", envvar="FAXRELAY_TOKEN", default="", metavar="TOKEN",
    help="The API token for remote mode [env: FAXRELAY_TOKEN].",
)  # fmt: skip
@click.pass_context
def main(context: click.Context, url: str, token: str) -> None:
    """faxrelay: a fax relay between fax providers and your own services.

    The operator commands (send, faxes, webhooks, backfill, accounts) work locally (next to
    `faxrelay up`, or with the deployment's settings), or with --url and --token (FAXRELAY_URL,
    FAXRELAY_TOKEN) over the API of a remote deployment, with the same output.

    Exit codes: 0 success, 1 the operation failed, 2 bad usage or configuration.
    """
    context.obj = Target(url, token)


for command in (
    up.up,
    up.sandbox_cmd,
    configuration.config_group,
    webhooks.webhooks_group,
    accounts.accounts_group,
    send.send_cmd,
    faxes.faxes_group,
    backfill.backfill,
    events.events_group,
):
    main.add_command(command)
