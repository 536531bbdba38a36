"""Things a caller may hold only so many of at once — a key's or a team's sandboxes
(``max_sandboxes``) — counted across every process that shares the limit store.

In memory each process counts its own. In Redis, one hash per slot holds each process's
count under the process's own field (an id made at start), and the process keeps an
instance key alive with a TTL while it holds anything (a heartbeat every quarter of it).
Taking a slot is one script: it drops the fields of processes whose instance key is gone
(crashed, or cut off from Redis for longer than the TTL), adds up the others, and writes
this process's new count only when the sum stays within the most allowed. Every write is
this process's absolute count with a sequence number, so a late or repeated write never
undoes a newer one, and the heartbeat writes them all again (what Redis lost while it was
unreachable comes back). So a crash frees its slots within the TTL, and no process can
hold more than the most allowed while Redis answers. A slot's hash lives twice the TTL past
the last write of any process, so one nobody holds any more goes away by itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["HOLD_SCRIPT", "PUBLISH_SCRIPT", "HeldSlots", "Slot"]


@dataclass(frozen=True, slots=True)
class Slot:
    key: str     # e.g. "key:<id>:sandboxes"
    most: int    # at once
    owner: str   # for messages: "key 'k1'"


class HeldSlots:
    """This process's counts per slot key, and the sequence of its writes to Redis."""

    def __init__(self) -> None:
        self.me = uuid.uuid4().hex
        self.counts: dict[str, int] = {}  # a count of 0 stays until Redis has it
        self.seq = 0

    def take(self, slots: Sequence[Slot]) -> int | None:
        """One of each, counted here: None, or the index of the first already full here."""
        for i, slot in enumerate(slots):
            if self.counts.get(slot.key, 0) >= slot.most:
                return i
        for slot in slots:
            self.counts[slot.key] = self.counts.get(slot.key, 0) + 1
        return None

    def give(self, keys: Sequence[str], *, keep_zeros: bool = True) -> None:
        """One of each back; a count down to 0 stays (for Redis to be told) unless not
        ``keep_zeros``."""
        for key in keys:
            left = self.counts.get(key, 0)
            if left == 0:
                continue  # none held (a second let-go): nothing to give
            if left > 1 or keep_zeros:
                self.counts[key] = left - 1
            else:
                del self.counts[key]

    def held(self, key: str) -> int:
        return self.counts.get(key, 0)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def published(self, keys: Sequence[str], seq: int) -> None:
        """Redis has the counts of ``keys`` as of ``seq``: forget those at 0 (unless
        taken again since)."""
        if seq == self.seq:
            for key in keys:
                if self.counts.get(key) == 0:
                    del self.counts[key]


# KEYS: the slot hashes. ARGV: this process's id, the instance key prefix, the TTL (ms),
# the write's sequence number, then per slot "most count" (count: this process's, this
# one included). Returns {-1, 0} when taken, else {index of the first full slot, what the
# world held there before (at most ``most``: holds of this process still in flight count)}.
HOLD_SCRIPT = """
local me, prefix, seq = ARGV[1], ARGV[2], tonumber(ARGV[4])
local live = {}
local function alive(inst)
  if live[inst] == nil then
    live[inst] = inst == me or redis.call('EXISTS', prefix .. inst) == 1
  end
  return live[inst]
end
local mine = {}
for i = 1, #KEYS do
  local most, count = string.match(ARGV[4 + i], '(%d+) (%d+)')
  most, count = tonumber(most), tonumber(count)
  mine[i] = count
  local total = count
  local fields = redis.call('HGETALL', KEYS[i])
  for j = 1, #fields, 2 do
    local f = fields[j]
    local inst = f
    if string.sub(f, -1) == '#' then inst = string.sub(f, 1, -2) end
    if not alive(inst) then
      redis.call('HDEL', KEYS[i], f)
    elseif inst ~= me and inst == f then
      total = total + tonumber(fields[j + 1])
    end
  end
  if total > most then return {i - 1, math.min(total - 1, most)} end
end
for i = 1, #KEYS do
  local last = tonumber(redis.call('HGET', KEYS[i], me .. '#') or '-1')
  if seq > last then redis.call('HSET', KEYS[i], me, mine[i], me .. '#', seq) end
  redis.call('PEXPIRE', KEYS[i], 2 * tonumber(ARGV[3]))
end
redis.call('SET', prefix .. me, '1', 'PX', ARGV[3])
return {-1, 0}
"""

# KEYS: the slot hashes. ARGV: this process's id, the instance key prefix, the TTL (ms)
# (0: this process stops, its instance key goes), the sequence number, then the counts.
PUBLISH_SCRIPT = """
local me, prefix, seq = ARGV[1], ARGV[2], tonumber(ARGV[4])
for i = 1, #KEYS do
  local last = tonumber(redis.call('HGET', KEYS[i], me .. '#') or '-1')
  if seq > last then
    local count = tonumber(ARGV[4 + i])
    if count > 0 then
      redis.call('HSET', KEYS[i], me, count, me .. '#', seq)
    else
      redis.call('HDEL', KEYS[i], me)
      redis.call('HSET', KEYS[i], me .. '#', seq)
    end
  end
  if tonumber(ARGV[3]) > 0 then redis.call('PEXPIRE', KEYS[i], 2 * tonumber(ARGV[3])) end
end
if tonumber(ARGV[3]) > 0 then
  redis.call('SET', prefix .. me, '1', 'PX', ARGV[3])
else
  redis.call('DEL', prefix .. me)
end
return 1
"""
