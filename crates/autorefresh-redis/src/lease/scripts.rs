//! The Lua scripts of the lease loop.
//!
//! Every decision that reads and then writes a key runs in one script, so it is atomic on the
//! server (no other client's command lands between the read and the write) and costs one
//! round trip however many shards it touches. Times come from the server's `TIME`: the
//! replicas' clocks may differ, Redis's is the one every member shares.

use redis::Script;

/// The compiled scripts (their SHA1 is computed once; `EVALSHA` loads them on a miss).
#[derive(Debug)]
pub(super) struct Scripts {
    /// KEYS: members. ARGV: member, ttl ms, membership channel, join message.
    ///
    /// Drops the expired members, (re)adds this one until now + ttl, announces it if it was
    /// not there (first start, or expired during an outage, or Redis lost its data), and
    /// returns `{added, members}`: 1 if it was not there, 0 otherwise, then the live members.
    pub(super) heartbeat: Script,
    /// KEYS: the lease keys this member holds. ARGV: member, ttl ms.
    ///
    /// For each key, 1 if the lease is this member's (extended to ttl), 0 if another member
    /// holds it, 2 if the key was gone and is this member's again. A gone key (expired while
    /// Redis was unreachable, or Redis restarted empty) is nobody's: taking it back at once,
    /// rather than dropping it, keeps a Redis restart from making every member drop and
    /// re-race for every shard.
    pub(super) renew: Script,
    /// KEYS: lease keys, in the order this member prefers them. ARGV: member, ttl ms, how
    /// many to take.
    ///
    /// Takes free keys (`SET NX PX`) in order until it has taken enough, and returns the
    /// 1-based positions of those taken. A key already this member's counts as taken (its
    /// `SET` went through on an earlier try whose answer was lost).
    pub(super) acquire: Script,
    /// KEYS: lease keys. ARGV: member, membership channel, release message.
    ///
    /// Deletes the keys still held by this member, publishes the message if any was, and
    /// returns how many were deleted.
    pub(super) release: Script,
    /// KEYS: members, then every lease key. ARGV: member, membership channel, leave message.
    ///
    /// Releases every lease this member holds (the owned set may miss one whose `SET`
    /// answer was lost), removes the member and announces the leave.
    pub(super) leave: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            heartbeat: Script::new(HEARTBEAT),
            renew: Script::new(RENEW),
            acquire: Script::new(ACQUIRE),
            release: Script::new(RELEASE),
            leave: Script::new(LEAVE),
        }
    }
}

const HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local added = redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
if added == 1 then
  redis.call('PUBLISH', ARGV[3], ARGV[4])
end
return {added, redis.call('ZRANGE', KEYS[1], 0, -1)}
";

const RENEW: &str = r"
local kept = {}
for i, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if holder == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    kept[i] = 1
  elseif holder == false then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    kept[i] = 2
  else
    kept[i] = 0
  end
end
return kept
";

const ACQUIRE: &str = r"
local need = tonumber(ARGV[3])
local taken = {}
for i, key in ipairs(KEYS) do
  if #taken >= need then
    break
  end
  if redis.call('SET', key, ARGV[1], 'NX', 'PX', ARGV[2]) then
    taken[#taken + 1] = i
  elseif redis.call('GET', key) == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    taken[#taken + 1] = i
  end
end
return taken
";

const RELEASE: &str = r"
local released = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('DEL', key)
    released = released + 1
  end
end
if released > 0 then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return released
";

const LEAVE: &str = r"
local released = 0
for i = 2, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('DEL', KEYS[i])
    released = released + 1
  end
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return released
";
