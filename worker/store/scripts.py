"""The store's Lua scripts: every write to a record and its indexes is one of these.

A script runs atomically, so a record, its indexes, its dedup key and its wake-up never disagree.
The key names come from ``worker.store.keys`` (substituted once, at import), so the scripts
cannot drift from the layout the rest of faxrelay reads.
"""

from __future__ import annotations

from string import Template

from worker.domain import FINAL_STATES
from worker.store import keys

# The ``$`` names of the scripts: the key names (prefixes for the ones an id or a value
# completes), and ``$final_states``, a Lua set of the final states.
_NAMES: dict[str, object] = {
    "fax": keys.FAX_PREFIX,
    "ix_all": keys.INDEX_ALL,
    "ix_dir": keys.INDEX_DIRECTION_PREFIX,
    "ix_acct": keys.INDEX_ACCOUNT_PREFIX,
    "ix_state": keys.INDEX_STATE_PREFIX,
    "due": keys.DUE,
    "lease": keys.LEASE_PREFIX,
    "final": keys.FINAL,
    "unfiled": keys.UNFILED,
    "upgrade": keys.FINAL_UPGRADE,
    "stats": keys.STATS,
    "last_ok": keys.LAST_OK,
    "day": keys.DAY_STATS_PREFIX,
    "day_ttl": keys.DAY_STATS_TTL,
    "hour": keys.HOUR_STATS_PREFIX,
    "hour_ttl": keys.HOUR_STATS_TTL,
    "lat_bounds": "{" + ", ".join(str(b) for b in keys.ARCHIVE_LATENCY_BOUNDS) + "}",
    "final_states": "{" + ", ".join(f"['{s}'] = true" for s in sorted(FINAL_STATES)) + "}",
    "wh": keys.WEBHOOK_LOG_PREFIX,
    "wh_ix": keys.WEBHOOK_LOG_INDEX,
    "wh_bucket": keys.WEBHOOK_LOG_BUCKET_PREFIX,
    "wh_bytes": keys.WEBHOOK_LOG_BYTES,
    "wh_all": keys.WEBHOOK_LOG_ALL_BYTES,
}


def _names(text: str) -> str:
    """``text`` with ``$fax``, ``$ix_all`` … (``_NAMES``) replaced."""
    return Template(text).substitute(_NAMES)


# The counters that /metrics and the overview read instead of the records (``keys.STATS``, the
# day hashes), and the filing queue of final records (``keys.UNFILED``, ``keys.FINAL``): kept by
# the scripts that move records, so they never disagree with the records.
#   count(id, direction, state, by, new): a record of that direction enters (1) or leaves (-1) a
#     state (``new``: a record being created, so of today).
#   finished(id, account, state, json): it became final (day counters; a failure's reason).
#   succeeded(account, state): a step the provider completed (``keys.LAST_OK``).
#   unfiled(id): it is final, and its final JSON must be (re)filed in S3 before it may leave.
#   hourly(field): one more in this hour's counters (``keys.hour_stats_key``: the charts).
#   hour_final(id, direction, state): it became final now (and, archived, how long it took).
_COUNTERS = _names("""
local FINAL = $final_states
local function now_day()
  return math.floor(tonumber(redis.call('TIME')[1]) / 86400)
end
local function day_of(id, new)
  -- ids are 'fx_' + 11 hex digits of epoch ms: the creation day, without reading the record
  local ms = tonumber(string.sub(id, 4, 14), 16)
  if not ms then return nil end
  local day = math.floor(ms / 86400000)
  -- (a new record's day is today; the overview shows today: older days' counts are gone)
  if not new and day < now_day() - 1 then return nil end
  return '$day' .. day
end
local function count(id, direction, state, by, new)
  redis.call('HINCRBY', '$stats', direction .. ':' .. state, by)
  local day = day_of(id, new)
  if day and redis.call('HINCRBY', day, direction .. ':' .. state, by) == by then
    redis.call('EXPIRE', day, $day_ttl)  -- a field's first count: the hash may be new
  end
end
local function finished(id, account, state, json)
  local day = day_of(id)
  if not day then return end
  redis.call('HINCRBY', day, account .. ':finished', 1)
  if state == 'failed' then
    redis.call('HINCRBY', day, account .. ':failed', 1)
    local reason = cjson.decode(json)['reason']
    if type(reason) ~= 'string' or reason == '' then reason = '(none)' end
    redis.call('HINCRBY', day, 'reason:' .. reason, 1)
  end
end
local function hourly(field)
  local key = '$hour' .. math.floor(tonumber(redis.call('TIME')[1]) / 3600)
  if redis.call('HINCRBY', key, field, 1) == 1 then
    redis.call('EXPIRE', key, $hour_ttl)  -- a field's first count: the hash may be new
  end
end
local LATENCY_BOUNDS = $lat_bounds
local function hour_final(id, direction, state)
  hourly(direction .. ':' .. state)
  if state ~= 'archived' then return end
  local ms = tonumber(string.sub(id, 4, 14), 16)  -- receipt, from the id (see day_of)
  if not ms then return end
  local now = redis.call('TIME')
  local took = tonumber(now[1]) + tonumber(now[2]) / 1000000 - ms / 1000
  local bucket = #LATENCY_BOUNDS
  for i, bound in ipairs(LATENCY_BOUNDS) do
    if took <= bound then bucket = i - 1; break end
  end
  hourly('lat:' .. bucket)
end
local OK = {archived = true, submitted = true, sending = true, delivered = true, accepted = true}
local function succeeded(account, state)
  if OK[state] then redis.call('HSET', '$last_ok', account, redis.call('TIME')[1]) end
end
local function unfiled(id)
  local filed = redis.call('ZSCORE', '$final', id)
  if filed then
    redis.call('ZREM', '$final', id)
    redis.call('ZADD', '$unfiled', filed, id)
  elseif not redis.call('ZSCORE', '$unfiled', id) then
    redis.call('ZADD', '$unfiled', redis.call('TIME')[1], id)
  end
end
""")

# The raw webhook log's writes (``worker.store.rawlog``): an entry goes in under a bucket (an
# account, or a refused bucket) with its size in its index member, ``{log id}|{bucket}|{bytes}``,
# and the oldest entries go out while the bucket or the whole log is over its caps. ``caps`` is
# "{bucket entries},{bucket bytes},{all entries},{all bytes}". Eviction is bounded per call.
_LOG = _names("""
local function log_evict(member)
  local id, bucket, size = string.match(member, '^([^|]*)|(.*)|(%d+)$$')
  if not id then  -- an entry written before the caps: its member is its id
    redis.call('DEL', '$wh' .. member)
    redis.call('ZREM', '$wh_ix', member)
    return
  end
  redis.call('DEL', '$wh' .. id)
  redis.call('ZREM', '$wh_ix', member)
  redis.call('ZREM', '$wh_bucket' .. bucket, member)
  redis.call('HINCRBY', '$wh_bytes', bucket, -tonumber(size))
  redis.call('HINCRBY', '$wh_bytes', '$wh_all', -tonumber(size))
end
local function log_trim(index, field, max_entries, max_bytes, size)
  -- size: the bytes counted now (a write just returned them), so the usual write reads nothing
  for _ = 1, 1000 do
    if redis.call('ZCARD', index) <= max_entries and size <= max_bytes then return end
    local oldest = redis.call('ZRANGE', index, 0, 0)[1]
    if not oldest then return end
    log_evict(oldest)
    size = tonumber(redis.call('HGET', '$wh_bytes', field) or '0')
  end
end
local function log_add(key, entry, ttl, caps, score, tag)
  local bucket = string.match(tag, '|(.*)$$')
  local member = tag .. '|' .. #entry
  local n1, b1, n2, b2 = string.match(caps, '^(%d+),(%d+),(%d+),(%d+)$$')
  redis.call('SET', key, entry, 'EX', ttl)
  redis.call('ZADD', '$wh_ix', score, member)
  redis.call('ZADD', '$wh_bucket' .. bucket, score, member)
  local size = redis.call('HINCRBY', '$wh_bytes', bucket, #entry)
  local all = redis.call('HINCRBY', '$wh_bytes', '$wh_all', #entry)
  log_trim('$wh_bucket' .. bucket, bucket, tonumber(n1), tonumber(b1), size)
  log_trim('$wh_ix', '$wh_all', tonumber(n2), tonumber(b2), all)
end
""")


def _lua(text: str) -> str:
    """``text`` with the ``_NAMES`` replaced, and ``$counters`` and ``$log_fns`` by the Lua
    functions above (which a script must define before it calls them)."""
    return Template(text).substitute(_NAMES, counters=_COUNTERS, log_fns=_LOG)


# KEYS: none (single-node Redis; keys are derived from ARGV for clarity).
# ARGV: 1 id, 2 record json, 3 direction, 4 account, 5 state, 6 due ('' = none),
#       7 dedup key ('' = none), 8 dedup ttl seconds (0 = keep), 9 fingerprint,
#       10 queue ('' = none), 11 message,
#       12 log key ('' = none), 13 log json, 14 log ttl, 15 log caps, 16 log score,
#       17 log tag ("{log id}|{bucket}", see ``_LOG``)
# The optional log entry (the raw webhook log) is written in the same call, so a webhook costs
# one round trip; on a dedup hit it is written with outcome "duplicate" and the existing id.
CREATE = _lua("""
$counters
$log_fns
local function log(outcome, fax_id)
  if ARGV[12] == '' then return end
  local entry = ARGV[13]
  if outcome then
    local decoded = cjson.decode(entry)
    decoded['outcome'] = outcome
    decoded['fax_id'] = fax_id
    entry = cjson.encode(decoded)
  end
  log_add(ARGV[12], entry, ARGV[14], ARGV[15], ARGV[16], ARGV[17])
end
if ARGV[7] ~= '' then
  local existing = redis.call('GET', ARGV[7])
  if existing then
    local ref = cjson.decode(existing)
    -- This very record, written by an earlier run of this call whose answer was lost (a
    -- client or the group commit sends an unanswered script again): created, not a duplicate,
    -- or the caller would delete the staged PDF or document the record uses.
    if ref['id'] == ARGV[1] then return {1, ARGV[1], ref['fingerprint'] or ''} end
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
count(ARGV[1], ARGV[3], ARGV[5], 1, true)
if FINAL[ARGV[5]] then
  finished(ARGV[1], ARGV[4], ARGV[5], ARGV[2])
  hour_final(ARGV[1], ARGV[3], ARGV[5])
  unfiled(ARGV[1])
end
log(nil, nil)
return {1, ARGV[1], ARGV[9]}
""")

# Compare-and-set on the record's version: 1 saved, 0 someone else wrote first, -1 no record.
# ARGV: 1 id, 2 expected version, 3 new json, 4 old state, 5 new state, 6 due ('' = none),
#       7 the account whose provider answered this step with an error ('' = none: counted in
#       this hour's "err:{account}"),
#       then any number of outbox entries, six arguments each: key, json, ttl seconds, sorted
#       set, score, member. The events a move emits (their deliveries) are written by the same
#       script as the move (DESIGN.md principle 8), so a crash between them cannot lose one.
SAVE = _lua("""
$counters
local key = '$fax' .. ARGV[1]
local current = redis.call('GET', key)
if not current then return -1 end
local old = cjson.decode(current)
if old['version'] ~= tonumber(ARGV[2]) then return 0 end
redis.call('SET', key, ARGV[3])
if ARGV[4] ~= ARGV[5] then
  redis.call('ZREM', '$ix_state' .. ARGV[4], ARGV[1])
  redis.call('ZADD', '$ix_state' .. ARGV[5], 0, ARGV[1])
  count(ARGV[1], old['direction'], ARGV[4], -1)
  count(ARGV[1], old['direction'], ARGV[5], 1)
  succeeded(old['account'], ARGV[5])
  if FINAL[ARGV[5]] and not FINAL[ARGV[4]] then
    finished(ARGV[1], old['account'], ARGV[5], ARGV[3])
    hour_final(ARGV[1], old['direction'], ARGV[5])
  end
end
if ARGV[7] ~= '' then hourly('err:' .. ARGV[7]) end
-- A final record is filed in S3 before it may leave Redis; saved again, it is filed again.
if FINAL[ARGV[5]] then unfiled(ARGV[1]) end
if ARGV[6] == '' then
  redis.call('ZREM', '$due', ARGV[1])
else
  redis.call('ZADD', '$due', ARGV[6], ARGV[1])
end
for i = 8, #ARGV - 5, 6 do
  redis.call('SET', ARGV[i], ARGV[i + 1], 'EX', ARGV[i + 2])
  redis.call('ZADD', ARGV[i + 3], ARGV[i + 4], ARGV[i + 5])
end
return 1
""")

# ARGV: 1 now, 2 limit, 3 grace. Takes due ids and pushes their due time out by ``grace`` so the
# next sweep does not wake them again while the woken task is on its way. A record whose lease a
# worker holds is not woken (that worker is on it) but looked at again when the lease would lapse:
# a worker that dies is replaced within a sweep of its lease lapsing, not a grace later.
CLAIM_DUE = _lua("""
local ids = redis.call('ZRANGEBYSCORE', '$due', '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local woken = {}
for _, id in ipairs(ids) do
  local held = redis.call('PTTL', '$lease' .. id)
  if held > 0 then
    redis.call('ZADD', '$due', tonumber(ARGV[1]) + held / 1000 + 0.5, id)
  else
    redis.call('ZADD', '$due', tonumber(ARGV[1]) + tonumber(ARGV[3]), id)
    woken[#woken + 1] = id
  end
end
return woken
""")

# KEYS: 1 the lease. ARGV: 1 the holder's token. Deletes the lease only if it is still ours.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


# --- retention (``worker.store.retention``) -------------------------------------------------------

# ARGV: 1 limit, 2… the final states. Once per store: the final records written before the
# filing queue existed join it (from now: their retention counts from the upgrade), a bounded
# batch per call, walking each final state index from where the last call stopped. Returns how
# many it queued, or -1 once every index has been walked.
ENQUEUE_FINALS = _lua("""
local queued, walking = 0, false
for i = 2, #ARGV do
  local state = ARGV[i]
  local from = redis.call('HGET', '$upgrade', state) or '-'
  if from ~= '~' then
    walking = true
    local lower = from == '-' and '-' or '(' .. from
    local ids = redis.call('ZRANGEBYLEX', '$ix_state' .. state, lower, '+', 'LIMIT', 0, tonumber(ARGV[1]))
    local now = redis.call('TIME')[1]
    for _, id in ipairs(ids) do
      if not redis.call('ZSCORE', '$final', id) and not redis.call('ZSCORE', '$unfiled', id) then
        redis.call('ZADD', '$unfiled', now, id)
        queued = queued + 1
      end
    end
    if #ids < tonumber(ARGV[1]) then
      redis.call('HSET', '$upgrade', state, '~')
    else
      redis.call('HSET', '$upgrade', state, ids[#ids])
    end
  end
end
if not walking then return -1 end
return queued
""")

# ARGV: 1 id, 2 the version whose JSON was filed. The record's final JSON is in S3: it may leave
# Redis once its retention has passed. A record saved since the filing stays unfiled (its newer
# JSON is filed on the next round). 1 moved, 0 not.
MARK_FILED = _lua("""
local raw = redis.call('GET', '$fax' .. ARGV[1])
if not raw then
  redis.call('ZREM', '$unfiled', ARGV[1])
  return 0
end
if cjson.decode(raw)['version'] ~= tonumber(ARGV[2]) then return 0 end
local at = redis.call('ZSCORE', '$unfiled', ARGV[1])
if not at then return 0 end
redis.call('ZREM', '$unfiled', ARGV[1])
redis.call('ZADD', '$final', at, ARGV[1])
return 1
""")

# ARGV: 1 cutoff (epoch seconds), 2 limit. Removes up to ``limit`` filed records that became final
# before the cutoff, each with its index entries, in one step: no index member is left behind
# naming a record that is gone. The day counters keep them (they were that day's faxes).
# Returns how many records were removed.
EXPIRE_FINAL = _lua("""
$counters
local ids = redis.call('ZRANGEBYSCORE', '$final', '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local removed = 0
for _, id in ipairs(ids) do
  local raw = redis.call('GET', '$fax' .. id)
  if raw then
    local r = cjson.decode(raw)
    if FINAL[r['state']] then
      redis.call('ZREM', '$ix_all', id)
      redis.call('ZREM', '$ix_dir' .. r['direction'], id)
      redis.call('ZREM', '$ix_acct' .. r['account'], id)
      redis.call('ZREM', '$ix_state' .. r['state'], id)
      redis.call('ZREM', '$due', id)
      redis.call('DEL', '$fax' .. id)
      redis.call('HINCRBY', '$stats', r['direction'] .. ':' .. r['state'], -1)
      removed = removed + 1
    end
  end
  redis.call('ZREM', '$final', id)
end
return removed
""")

# ARGV: 1 the record id, 2 expiry (epoch seconds), 3… dedup keys. Each key that still names this
# record expires then (a key another record holds now is left alone).
EXPIRE_DEDUP = """
for i = 3, #ARGV do
  local ref = redis.call('GET', ARGV[i])
  if ref and cjson.decode(ref)['id'] == ARGV[1] then
    redis.call('EXPIREAT', ARGV[i], ARGV[2])
  end
end
return 1
"""

# ARGV: directions…, '|', states…. Once per store (a store older than the counters, or a Redis
# restored from a backup without them): the counters from the indexes, in one atomic step.
REBUILD_STATS = _lua("""
if redis.call('HGET', '$stats', '_built') then return 0 end
local directions, states, into = {}, {}, nil
for _, value in ipairs(ARGV) do
  if value == '|' then into = states
  elseif into then table.insert(into, value)
  else table.insert(directions, value) end
end
redis.call('DEL', '$stats')
for _, direction in ipairs(directions) do
  for _, state in ipairs(states) do
    local n = redis.call('ZINTERCARD', 2, '$ix_state' .. state, '$ix_dir' .. direction)
    if n > 0 then redis.call('HSET', '$stats', direction .. ':' .. state, n) end
  end
end
redis.call('HSET', '$stats', '_built', 1)
return 1
""")


# --- the raw webhook log (``worker.store.rawlog``) ------------------------------------------------

# ARGV: 1 key, 2 json, 3 ttl, 4 caps, 5 score, 6 tag: one entry, under the caps (see ``_LOG``).
LOG = _lua("""
$log_fns
log_add(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
return 1
""")

# ARGV: 1 cutoff (epoch seconds), 2 limit. Drops up to ``limit`` entries older than the cutoff,
# with their index members and bytes. Returns how many.
LOG_TRIM = _lua("""
$log_fns
local old = redis.call('ZRANGEBYSCORE', '$wh_ix', '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(old) do log_evict(member) end
return #old
""")

# A provider job's dedup key (``keys.job_scope``), claimed for a send. KEYS: 1 the job key.
# ARGV: 1 fax id, 2 "answer" (the provider's submit answer named the job: certain) or "adopt" (a
# lost submit's look-up found it: a guess), 3 ttl seconds. Returns {1, previous owner or ''} when
# the key is the fax's now, {0, owner} when another send owns the job (an adoption never takes a
# job from another send; an answer does, from one that had only adopted it, and says whose).
CLAIM_JOB = """
local current = redis.call('GET', KEYS[1])
local ref = current and cjson.decode(current) or nil
if ref and ref['id'] == ARGV[1] then
  if ARGV[2] == 'answer' and ref['adopted'] then
    redis.call('SET', KEYS[1], cjson.encode({id = ARGV[1]}), 'EX', ARGV[3])
  end
  return {1, ''}
end
if ref and ARGV[2] == 'adopt' then return {0, ref['id']} end
if ARGV[2] == 'adopt' then
  redis.call('SET', KEYS[1], cjson.encode({id = ARGV[1], adopted = true}), 'EX', ARGV[3])
else
  redis.call('SET', KEYS[1], cjson.encode({id = ARGV[1]}), 'EX', ARGV[3])
end
return {1, ref and ref['id'] or ''}
"""

# A status webhook for a job: the record the job's key names, or (no key yet: the worker has not
# saved the job id) the body kept for the submit step, in one step, so that the worker's claim of
# the key and its take of the kept body cannot both fall between the check and the stash.
# KEYS: 1 the job key, 2 the pending-status key. ARGV: 1 body, 2 ttl seconds.
# Returns the job key's value, or false when the body was kept.
STASH_STATUS = """
local ref = redis.call('GET', KEYS[1])
if ref then return ref end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
return false
"""
