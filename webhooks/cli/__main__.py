"""``python -m webhooks.cli``: the same command as the ``faxrelay`` script."""

from webhooks.cli import main

main()
