"""The Lua scripts that make the Redis store's writes atomic (redis-py loads them, EVALSHA runs them).

Each runs as one step in Redis, so any number of workers on any number of
hosts can race without a lock:

- ``CHANNEL_APPEND``: a channel's next offset, its epoch (made anew when its
  metadata is missing: Redis flushed, or restarted without persistence, or
  the channel idle past its TTL), the entry, and the trim to the channel's
  history limits (messages and bytes).
  A new epoch is announced on the resets stream, so every worker's reader
  tells its streams ``reset``.
- ``JOB_APPEND``: the job's record after a batch of its events, with ids its
  owner chose. The entries themselves are plain ``XADD``s in the same
  ``MULTI`` (writer.py): their bytes never pass through Lua, which cost Redis
  several times the CPU of the appends themselves. An entry at or below the
  stream's last id is refused by Redis (a batch re-sent after a dropped
  connection is applied once), and nothing is appended once the log holds its
  terminal event (``_fin``): ``JOB_LOST`` sets the stream's last id to the
  largest there is, so a job declared lost stays lost.
"""

from __future__ import annotations

from redis.exceptions import NoScriptError

# KEYS: meta hash, stream, set of channel names, resets stream, the prefix of every channel's meta hash.
# ARGV: new epoch, kind, frame tail, audience ("" none), size, max bytes, max events, name, ensure only ("1"),
#       max channels, seconds an idle channel is kept.
# Returns {epoch, offset} (offset 0 when only ensured), or the error TOOMANY.
CHANNEL_APPEND = """
local meta, stream = KEYS[1], KEYS[2]
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  if redis.call('SISMEMBER', KEYS[3], ARGV[8]) == 0 and redis.call('SCARD', KEYS[3]) >= tonumber(ARGV[10]) then
    -- Full: first forget the names of channels that expired (idle longer than their TTL).
    for _, name in ipairs(redis.call('SMEMBERS', KEYS[3])) do
      if redis.call('EXISTS', KEYS[5] .. name) == 0 then redis.call('SREM', KEYS[3], name) end
    end
    if redis.call('SCARD', KEYS[3]) >= tonumber(ARGV[10]) then
      return redis.error_reply('TOOMANY')
    end
  end
  epoch = ARGV[1]
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'epoch', epoch, 'last', 0, 'dropped', 0, 'bytes', 0)
  redis.call('SADD', KEYS[3], ARGV[8])
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', 1000, '*', 'key', 'channel:' .. ARGV[8], 'epoch', epoch)
end
redis.call('EXPIRE', meta, ARGV[11])
redis.call('EXPIRE', stream, ARGV[11])
if ARGV[9] == '1' then
  return {epoch, 0}
end
local id = redis.call('HINCRBY', meta, 'last', 1)
if ARGV[4] ~= '' then
  redis.call('XADD', stream, id .. '-0', 'k', ARGV[2], 'f', ARGV[3], 'z', ARGV[5], 'a', ARGV[4])
else
  redis.call('XADD', stream, id .. '-0', 'k', ARGV[2], 'f', ARGV[3], 'z', ARGV[5])
end
local bytes = redis.call('HINCRBY', meta, 'bytes', ARGV[5])
local length = redis.call('XLEN', stream)
local dropped = nil
while length > 1 and (bytes > tonumber(ARGV[6]) or length > tonumber(ARGV[7])) do
  local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
  redis.call('XDEL', stream, first[1])
  local fields = first[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'z' then bytes = bytes - tonumber(fields[i + 1]) end
  end
  length = length - 1
  dropped = first[1]
end
if dropped then
  redis.call('HSET', meta, 'bytes', bytes, 'dropped', string.match(dropped, '^(%d+)'))
end
return {epoch, id}
"""

# KEYS: the job's hash, its stream.
# ARGV: the batch's last id, output bytes, dropped bytes, dropped-through id, the id to trim before ("" none),
#       seconds a finished log is kept, the start event's id ("" none in the batch) and its frame tail,
#       "1" if the batch holds the terminal event.
# Runs after the batch's XADDs, in the same MULTI. Returns 1, 0 when the log had ended already, -1 when the job
# is not kept (its stream, made again by the XADDs, goes).
JOB_APPEND = """
local job, stream = KEYS[1], KEYS[2]
if redis.call('EXISTS', job) == 0 then
  redis.call('DEL', stream)
  return -1
end
if redis.call('HGET', job, '_fin') == '1' then return 0 end
local last = math.max(tonumber(redis.call('HGET', job, '_last') or '0'), tonumber(ARGV[1]))
if ARGV[7] ~= '' then redis.call('HSET', job, '_start', ARGV[8], '_start_id', ARGV[7]) end
if ARGV[9] == '1' then redis.call('HSET', job, '_fin', '1') end
redis.call('HSET', job, '_last', last, 'output_bytes', ARGV[2], 'dropped_bytes', ARGV[3], '_dropped', ARGV[4])
if ARGV[5] ~= '' then redis.call('XTRIM', stream, 'MINID', ARGV[5]) end
if ARGV[9] == '1' then redis.call('EXPIRE', stream, ARGV[6]) end
return 1
"""

# KEYS: the job's hash, its stream, its host's running set, its owner's running set, the finished set.
# ARGV: host, worker, the exit frame's tail, ended_at (JSON), seconds a finished log is kept, job id.
# Running -> lost, once: only while the job is live, has no terminal event, and is still the given worker's.
# Returns 1 if this call made the job lost.
JOB_LOST = """
local job = KEYS[1]
local state = redis.call('HGET', job, 'state')
if not state then
  redis.call('SREM', KEYS[3], ARGV[6])
  return 0
end
if redis.call('HGET', job, '_fin') == '1' or (state ~= '"running"' and state ~= '"stopping"') then
  return 0
end
if redis.call('HGET', job, '_host') ~= ARGV[1] or redis.call('HGET', job, '_worker') ~= ARGV[2] then
  return 0
end
local id = tonumber(redis.call('HGET', job, '_last') or '0') + 1
redis.call('XADD', KEYS[2], id .. '-0', 'k', 'exit', 'f', ARGV[3])
-- The owner's appends are plain XADDs (JOB_APPEND): from now on Redis refuses every one of them.
redis.call('XSETID', KEYS[2], '18446744073709551615-0')
redis.call('HSET', job, '_fin', '1', '_lost', '1', '_last', id, 'state', '"lost"', 'reason', '"lost"',
           'ended_at', ARGV[4])
redis.call('SREM', KEYS[3], ARGV[6])
redis.call('SREM', KEYS[4], ARGV[6])
redis.call('EXPIRE', job, ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('ZADD', KEYS[5], ARGV[4], ARGV[6])
return 1
"""

# KEYS: the job's hash. ARGV: field, value, ... (the owner's record of how the job ended).
# Not over a job declared lost: its record keeps saying so. Returns 1 if written.
JOB_FINISH = """
if redis.call('HGET', KEYS[1], '_lost') then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""

# KEYS: the job's hash, its host's running set, its owner's running set, the finished set, the set of all jobs.
# ARGV: job id, ended_at, seconds a finished job is kept, max_finished_jobs, the key prefix.
# A job run here ended: out of the running sets, into the finished set; the oldest finished jobs beyond
# max_finished_jobs are forgotten (record and log). Returns how many were.
JOB_ENDED = """
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
local excess = redis.call('ZCARD', KEYS[4]) - tonumber(ARGV[4])
if excess <= 0 then return 0 end
local oldest = redis.call('ZPOPMIN', KEYS[4], excess)
for i = 1, #oldest, 2 do
  redis.call('ZREM', KEYS[5], oldest[i])
  redis.call('DEL', ARGV[5] .. 'job:' .. oldest[i], ARGV[5] .. 'log:job:' .. oldest[i])
end
return excess
"""

# KEYS: the bucket (a hash). ARGV: tokens per second, burst, seconds to keep an idle bucket.
# Takes a token if there is one: returns "0", else the seconds until there is (as a string: Lua numbers in
# replies are cut to integers). Redis's own clock, so every host agrees.
TOKEN_BUCKET = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(bucket[1]) or burst
local updated = tonumber(bucket[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - updated) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(now))
redis.call('EXPIRE', KEYS[1], ARGV[3])
return tostring(wait)
"""


def execute_multi(client, commands: list[tuple], scripts: list, refused: tuple[str, ...] = ()) -> list:
    """Run ``commands`` (EVALSHA of ``scripts`` among them) in one MULTI, one round trip: no SCRIPT EXISTS
    first, as a pipeline of ``Script`` calls would send. If Redis lost the scripts (restarted, flushed), they
    are loaded and the whole MULTI runs again, so every command in it must be safe to repeat. An error whose
    text holds one of ``refused`` is left in the results; any other is raised."""
    for attempt in (1, 2):
        pipe = client.pipeline(transaction=True)
        for command in commands:
            pipe.execute_command(*command)
        results = pipe.execute(raise_on_error=False)
        missing = False
        for result in results:
            if isinstance(result, NoScriptError) and attempt == 1:
                missing = True
            elif isinstance(result, Exception) and not any(text in str(result) for text in refused):
                raise result
        if not missing:
            return results
        for script in scripts:
            client.script_load(script.script)
    raise AssertionError("unreachable")
