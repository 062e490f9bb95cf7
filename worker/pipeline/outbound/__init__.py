"""The outbound pipeline: a document and a number in, one submit at the provider, followed to the end.

- ``accept``   validate a send, store its document, create the record (idempotency keys).
- ``submit``   submit to the provider at most once per job; a lost submit is looked up, never
               blindly repeated.
- ``follow``   the worker's wake-ups (``submit_fax``, ``poll_fax``): status webhooks and polls,
               redial, failover, deadline.
- ``actions``  operator actions: cancel, retry.

Dependencies point one way: ``actions`` → ``submit`` ← ``follow``; ``accept`` stands alone.
Import from the modules themselves.
"""
