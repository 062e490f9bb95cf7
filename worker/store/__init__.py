"""Everything faxrelay keeps in Redis, and the only code that writes it.

- ``records``: fax records, their indexes, dedup and idempotency keys, the due index and leases
  (Lua scripts, compare-and-set), for the worker (blocking) and the web app (async).
- ``groupcommit``: the web app's batching of concurrent script calls over one connection.
- ``rawlog``: the raw webhook log, every request to a webhook route, accepted or refused.
"""
