"""Everything faxrelay keeps in Redis.

- ``keys``: every key faxrelay uses and how long it lives; start here to learn what is in Redis.
- ``records``: fax records, their indexes, dedup and idempotency keys, the due index and leases
  (compare-and-set), for the worker (blocking) and the web app (async).
- ``scripts``: the Lua scripts ``records`` writes with, so a record and its indexes never disagree.
- ``groupcommit``: the web app's batching of concurrent script calls over one connection.
- ``rawlog``: the raw webhook log, every request to a webhook route, accepted or refused.
- ``replicas``: waiting for the replicas (``WAIT``) before an acknowledgement
  (FAXRELAY_REDIS_MIN_REPLICAS). Clients are made by ``config.connect`` (a URL or Sentinel).
"""
