"""The compare-and-set script of the redis stores: several streams' writes, all or nothing,
with the scores they add, atomic in Redis (a script runs whole or not at all).

On a Redis Cluster a script may touch keys of one hash slot only: the cluster store runs it
once per slot a call writes to, with totals and residuals keys of that slot.
"""

from __future__ import annotations

import hashlib

#: Compare-and-set of several streams, all or nothing: when a stream's stored revision is
#: not the one expected, nothing is written and the failing items (1-based) are returned;
#: else every record is written, the writes' scores added to their model version's totals
#: (a hash: ``since``, ``<row>:<step index>``; with flag ``n`` also ``newest``, the time of
#: its newest residual chunk) and residual chunks (a list, trimmed), and an empty list
#: returned. KEYS: the totals, the residuals, then per item the stream's hash and its "seen"
#: marker. ARGV: items, flags (``e``: the store expires idle streams, ``n``: stamp
#: ``newest``), the residual chunk ('' for none), the time, the residual chunks kept, the
#: number of total fields, then those fields and values, then per item: expected revision
#: ('' or '-1': the key must not exist), the key's time to live in ms ('' for none), the
#: marker's ('' for none), the marker's value, the number of hash fields, those fields and
#: values.
CAS = """
local items = tonumber(ARGV[1])
local expires = string.find(ARGV[2], 'e', 1, true) ~= nil
local at = 7 + 2 * tonumber(ARGV[6])
local starts, failed, claimed = {}, {}, {}
for i = 1, items do
  starts[i] = at
  local key = KEYS[1 + 2 * i]
  local current = redis.call('HGET', key, 'revision')
  local expected = ARGV[at]
  if claimed[key] then  -- a stream written twice: the second write finds the first's
    failed[#failed + 1] = i
  elseif expected == '' or expected == '-1' then
    if current then failed[#failed + 1] = i end
  elseif current ~= expected then
    failed[#failed + 1] = i
  end
  claimed[key] = true
  at = at + 5 + 2 * tonumber(ARGV[at + 4])
end
if #failed > 0 then return failed end
for i = 1, items do
  local a = starts[i]
  local key, seen = KEYS[1 + 2 * i], KEYS[2 + 2 * i]
  redis.call('HSET', key, unpack(ARGV, a + 5, a + 4 + 2 * tonumber(ARGV[a + 4])))
  if expires then
    if ARGV[a + 1] ~= '' then redis.call('PEXPIRE', key, ARGV[a + 1])
    else redis.call('PERSIST', key) end
    if ARGV[a + 2] ~= '' then redis.call('SET', seen, ARGV[a + 3], 'PX', ARGV[a + 2])
    else redis.call('SET', seen, ARGV[a + 3]) end
  end
end
if tonumber(ARGV[6]) > 0 then
  redis.call('HSETNX', KEYS[1], 'since', ARGV[4])
  for j = 7, 6 + 2 * tonumber(ARGV[6]), 2 do
    redis.call('HINCRBYFLOAT', KEYS[1], ARGV[j], ARGV[j + 1])
  end
end
if ARGV[3] ~= '' then
  redis.call('RPUSH', KEYS[2], ARGV[3])
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[5]), -1)
  if string.find(ARGV[2], 'n', 1, true) then
    redis.call('HSET', KEYS[1], 'newest', ARGV[4])
  end
end
return {}
"""
#: What EVALSHA names the script by.
CAS_SHA = hashlib.sha1(CAS.encode()).hexdigest()
