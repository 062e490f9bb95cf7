"""A faxrelay configuration with one account per provider, pointing at a running sandbox.

``faxrelay up --sandbox`` writes this to ``{state dir}/sandbox.toml``; it uses the credentials each
sandbox module accepts.
"""

from __future__ import annotations

from sandbox import callerip, primevox, ucx, voipms, voipnow


def sandbox_accounts_toml(sandbox_url: str, webhook_token: str) -> str:
    return f"""# Written by `faxrelay up --sandbox`: one account per provider, all on the sandbox.
[accounts.primevox]
provider = "primevox"
base_url = "{sandbox_url}/primevox"
webhook_token = "{webhook_token}"
auth = "{primevox.VALID_AUTH}"
container_id = "{primevox.VALID_CONTAINER}"
box_id = "{primevox.VALID_BOX}"

[accounts.ucx]
provider = "ucx"
base_url = "{sandbox_url}/ucx"
webhook_token = "{webhook_token}"
client_id = "{ucx.CLIENT_ID}"
client_secret = "{ucx.CLIENT_SECRET}"
fax_id = "{ucx.FAX_ID}"
reconcile_interval = 60

[accounts.voipnow]
provider = "voipnow"
base_url = "{sandbox_url}/voipnow"
client_id = "{voipnow.CLIENT_ID}"
client_secret = "{voipnow.CLIENT_SECRET}"
extension = "{voipnow.EXTENSION}"

[accounts.voipms]
provider = "voipms"
base_url = "{sandbox_url}/voipms"
webhook_token = "{webhook_token}"
api_username = "{voipms.API_USERNAME}"
api_password = "{voipms.API_PASSWORD}"
from_number = "{voipms.FAX_NUMBER}"
reconcile_interval = 60

[accounts.callerip]
provider = "callerip"
base_url = "{sandbox_url}/callerip"
token = "{callerip.VALID_TOKEN}"
"""
