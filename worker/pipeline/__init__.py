"""The fax lifecycle: the steps that move records forward, one module per pipeline.

- ``steps``: leases and the save-with-retry that every step uses.
- ``inbound``: received → fetching → archived | failed, and reconcile of list-only providers.
- ``outbound``: a package: ``accept`` a send, ``submit`` it, ``follow`` the job to a final state,
  operator ``actions`` (cancel, retry: inbound records too).
- ``sweeper``: wakes records that are overdue (a lost message, a crashed worker).
- ``events``: signed Standard Webhooks events to callbacks and subscribers.
"""
