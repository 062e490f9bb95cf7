"""Fast versions of standard calls, for the webhook hot path (measured in ``bench/ingest``).

- ``forms.parse_form``: what ``urllib.parse.parse_qs(text, keep_blank_values=True)`` gives.
- ``messages.task_message``: the protocol-2 envelope ``app.amqp.as_task_v2`` plus kombu's Redis
  transport would write, built directly so the web app can LPUSH it inside its own Redis script.
- ``ids``: ``secrets.token_hex``-style random parts of ids, from a pool of ``os.urandom`` bytes.

Each module's docstring states what it replaces and what it costs; tests compare each with the
standard call it stands in for.
"""
