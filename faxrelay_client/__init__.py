"""faxrelay's Python client: send a fax, follow it, and check the events it sends.

```python
from faxrelay_client import Client, verify_event

with Client(url, token) as faxrelay:
    fax = faxrelay.wait(faxrelay.send("main", "+1 555 234 5678", pdf_bytes).id, timeout=600)
event = verify_event(secret, headers, body)  # in the callback's receiver
```

``models`` is the ``/v1`` contract the server validates with (it imports only pydantic); the
package's name keeps it apart from a caller's own ``config`` or ``worker`` packages.
"""

from faxrelay_client.client import Client, FaxrelayError, Sent
from faxrelay_client.events import Event, InvalidEvent, verify_event
from faxrelay_client.models import Backfill, Document, Fax, FaxPage

__all__ = [
    "Backfill",
    "Client",
    "Document",
    "Event",
    "Fax",
    "FaxPage",
    "FaxrelayError",
    "InvalidEvent",
    "Sent",
    "verify_event",
]
