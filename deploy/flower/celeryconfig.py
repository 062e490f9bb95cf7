"""Celery settings for Flower in compose.ha.yaml: the broker is the Valkey primary the Sentinels name.

Flower runs from its own image without faxrelay's code; Celery's default loader imports this module
(``CELERY_CONFIG_MODULE=celeryconfig``) because a Sentinel broker needs transport options that no
environment variable can carry. It reads the same variables as faxrelay's processes.
"""

import os
from urllib.parse import quote

_password = os.environ["REDIS_PASSWORD"]
_sentinels = [a.strip() for a in os.environ["FAXRELAY_REDIS_SENTINELS"].split(",") if a.strip()]

# The same URLs as faxrelay's own (config/connect.py): the password quoted for the URL.
broker_url = ";".join(
    f"sentinel://:{quote(_password, safe='')}@{address}/0" for address in _sentinels
)
broker_transport_options = {
    "master_name": os.environ.get("FAXRELAY_REDIS_SENTINEL_MASTER", "faxrelay"),
    # The sentinels ask for the same password as the data nodes (compose.ha.yaml).
    "sentinel_kwargs": {"password": _password},
}
