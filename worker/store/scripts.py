"""The store's Lua scripts: every write to a record and its indexes is one of these.

A script runs atomically, so a record, its indexes, its dedup key and its wake-up never disagree.
The key names come from ``worker.store.keys`` (substituted once, at import), so the scripts
cannot drift from the layout the rest of faxrelay reads.
"""

from __future__ import annotations

from string import Template

from worker.store import keys


def _lua(text: str) -> str:
    """``text`` with ``$fax``, ``$ix_all``, ``$ix_dir``, ``$ix_acct``, ``$ix_state`` and ``$due``
    replaced by the key names (prefixes for the ones an id or a value completes)."""
    return Template(text).substitute(
        fax=keys.FAX_PREFIX,
        ix_all=keys.INDEX_ALL,
        ix_dir=keys.INDEX_DIRECTION_PREFIX,
        ix_acct=keys.INDEX_ACCOUNT_PREFIX,
        ix_state=keys.INDEX_STATE_PREFIX,
        due=keys.DUE,
    )


# KEYS: none (single-node Redis; keys are derived from ARGV for clarity).
# ARGV: 1 id, 2 record json, 3 direction, 4 account, 5 state, 6 due ('' = none),
#       7 dedup key ('' = none), 8 dedup ttl seconds (0 = keep), 9 fingerprint,
#       10 queue ('' = none), 11 message,
#       12 log key ('' = none), 13 log json, 14 log ttl, 15 log index, 16 log score, 17 log member
# The optional log entry (the raw webhook log) is written in the same call, so a webhook costs
# one round trip; on a dedup hit it is written with outcome "duplicate" and the existing id.
CREATE = _lua("""
local function log(outcome, fax_id)
  if ARGV[12] == '' then return end
  local entry = ARGV[13]
  if outcome then
    local decoded = cjson.decode(entry)
    decoded['outcome'] = outcome
    decoded['fax_id'] = fax_id
    entry = cjson.encode(decoded)
  end
  redis.call('SET', ARGV[12], entry, 'EX', ARGV[14])
  redis.call('ZADD', ARGV[15], ARGV[16], ARGV[17])
end
if ARGV[7] ~= '' then
  local existing = redis.call('GET', ARGV[7])
  if existing then
    local ref = cjson.decode(existing)
    log('duplicate', ref['id'])
    return {0, ref['id'], ref['fingerprint'] or ''}
  end
  local ref = cjson.encode({id = ARGV[1], fingerprint = ARGV[9]})
  if tonumber(ARGV[8]) > 0 then
    redis.call('SET', ARGV[7], ref, 'EX', ARGV[8])
  else
    redis.call('SET', ARGV[7], ref)
  end
end
redis.call('SET', '$fax' .. ARGV[1], ARGV[2])
redis.call('ZADD', '$ix_all', 0, ARGV[1])
redis.call('ZADD', '$ix_dir' .. ARGV[3], 0, ARGV[1])
redis.call('ZADD', '$ix_acct' .. ARGV[4], 0, ARGV[1])
redis.call('ZADD', '$ix_state' .. ARGV[5], 0, ARGV[1])
if ARGV[6] ~= '' then redis.call('ZADD', '$due', ARGV[6], ARGV[1]) end
if ARGV[10] ~= '' then redis.call('LPUSH', ARGV[10], ARGV[11]) end
log(nil, nil)
return {1, ARGV[1], ARGV[9]}
""")

# Compare-and-set on the record's version: 1 saved, 0 someone else wrote first, -1 no record.
# ARGV: 1 id, 2 expected version, 3 new json, 4 old state, 5 new state, 6 due ('' = none)
SAVE = _lua("""
local key = '$fax' .. ARGV[1]
local current = redis.call('GET', key)
if not current then return -1 end
if cjson.decode(current)['version'] ~= tonumber(ARGV[2]) then return 0 end
redis.call('SET', key, ARGV[3])
if ARGV[4] ~= ARGV[5] then
  redis.call('ZREM', '$ix_state' .. ARGV[4], ARGV[1])
  redis.call('ZADD', '$ix_state' .. ARGV[5], 0, ARGV[1])
end
if ARGV[6] == '' then
  redis.call('ZREM', '$due', ARGV[1])
else
  redis.call('ZADD', '$due', ARGV[6], ARGV[1])
end
return 1
""")

# ARGV: 1 now, 2 limit, 3 grace. Takes due ids and pushes their due time out by ``grace`` so the
# next sweep does not wake them again while the woken task is on its way.
CLAIM_DUE = _lua("""
local ids = redis.call('ZRANGEBYSCORE', '$due', '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  redis.call('ZADD', '$due', tonumber(ARGV[1]) + tonumber(ARGV[3]), id)
end
return ids
""")

# KEYS: 1 the lease. ARGV: 1 the holder's token. Deletes the lease only if it is still ours.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
