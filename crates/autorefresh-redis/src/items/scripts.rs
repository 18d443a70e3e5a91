//! The Lua scripts and the round trips of the item plane.
//!
//! Every write goes through one script, which checks the epoch, applies a batch of writes
//! and publishes each applied change in the same script: the channel's order is the write
//! order, and nothing is written against a Redis that lost its data unnoticed.

use std::sync::LazyLock;

use redis::aio::ConnectionManager;
use redis::{ErrorKind, RedisError, RedisResult, Script, Value};

use super::outbox::{Kind, Op};
use crate::keys::Keys;

/// KEYS: clock, epoch, then per write the items and versions hashes of its shard.
/// ARGV: member, channel, expected epoch, tombstone window (ms), then per write: kind, id,
/// item, base, shard.
///
/// Answers `EPOCH` (nothing applied) if the epoch is not the expected one; else one answer per
/// write: `{1, version}` applied, `{0, version, item}` not applied and here is the current
/// item, `{2}` not applied because the id does not exist.
///
/// Kinds: `c` create if absent, `u` update if present, `r` refresh if the version is the base,
/// `p` put, `d` delete, and after a data loss `s` write back if absent and `o` restore (a
/// change made meanwhile: write) unless deleted since.
///
/// A delete leaves a tombstone (`-version`) in the versions hash while the epoch is younger
/// than the window: a write-back after a data loss then does not undo a delete another
/// replica made while Redis was down.
static WRITE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local epoch = redis.call('GET', KEYS[2])
if epoch ~= ARGV[3] then return 'EPOCH' end
local young = false
local born = tonumber(string.match(epoch, ':(%d+)$') or '')
if born then
  local t = redis.call('TIME')
  young = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - born < tonumber(ARGV[4])
end
local member, channel = ARGV[1], ARGV[2]
local out = {}
for i = 0, (#KEYS - 2) / 2 - 1 do
  local items, versions = KEYS[3 + 2 * i], KEYS[4 + 2 * i]
  local a = 5 + 5 * i
  local kind, id, item, base, shard = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local current = redis.call('HGET', items, id)
  local version = redis.call('HGET', versions, id)
  local function publish(k, v, body)
    redis.call('PUBLISH', channel,
      k .. '|' .. member .. '|' .. v .. '|' .. shard .. '|' .. #id .. '|' .. id .. body)
  end
  local function write()
    local v = string.format('%d', redis.call('INCR', KEYS[1]))
    redis.call('HSET', items, id, item)
    redis.call('HSET', versions, id, v)
    publish('u', v, item)
    return {1, v}
  end
  local tomb = version and string.sub(version, 1, 1) == '-'
  local answer
  if kind == 'd' then
    local v = string.format('%d', redis.call('INCR', KEYS[1]))
    redis.call('HDEL', items, id)
    if young then redis.call('HSET', versions, id, '-' .. v) else redis.call('HDEL', versions, id) end
    publish('d', v, '')
    answer = {1, v}
  elseif kind == 'p' or (kind == 'o' and (current or not tomb)) then
    answer = write()
  elseif current then
    if kind == 'u' or (kind == 'r' and version == base) then
      answer = write()
    else
      answer = {0, version or '0', current}
    end
  elseif kind == 'c' or (kind == 's' and not tomb) then
    answer = write()
  else
    answer = {2}
  end
  out[#out + 1] = answer
end
return out
",
    )
});

/// KEYS: epoch, clock. ARGV: a new token, the lowest the clock may be.
///
/// Sets the epoch (`token:<Redis time in ms>`) if there is none, raises the clock to at
/// least the given value (versions stay above every one a replica saw before a data loss),
/// and answers the epoch.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if not redis.call('GET', KEYS[1]) then
  local t = redis.call('TIME')
  local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('SET', KEYS[1], ARGV[1] .. ':' .. string.format('%d', ms))
end
local clock = tonumber(redis.call('GET', KEYS[2]) or '0')
if clock < tonumber(ARGV[2]) then redis.call('SET', KEYS[2], ARGV[2]) end
return redis.call('GET', KEYS[1])
",
    )
});

/// The outcome of one write.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Answer {
    Applied(u64),
    /// Not applied; the id holds `item` at `version`.
    Current {
        version: u64,
        item: Vec<u8>,
    },
    /// Not applied; the id does not exist.
    Gone,
}

/// The outcome of a batch.
#[derive(Debug)]
pub(super) enum Reply {
    /// Redis's epoch is not the one the batch was built for: nothing was applied.
    Epoch,
    Answers(Vec<Answer>),
}

/// Sends one batch of writes.
pub(super) async fn write(
    conn: &mut ConnectionManager,
    keys: &Keys,
    member: &str,
    epoch: &[u8],
    tombstone_window_ms: u64,
    ops: &[&Op],
) -> RedisResult<Reply> {
    let mut call = WRITE.prepare_invoke();
    call.key(keys.clock()).key(keys.epoch());
    call.arg(member).arg(keys.events()).arg(epoch).arg(tombstone_window_ms);
    for op in ops {
        call.key(keys.items(op.shard)).key(keys.versions(op.shard));
        let base = match op.kind {
            Kind::Refresh(base) => base.unwrap_or(0),
            _ => 0,
        };
        call.arg(op.kind.letter()).arg(&op.id[..]).arg(&op.item[..]).arg(base).arg(op.shard);
    }
    let value: Value = call.invoke_async(conn).await?;
    parse_reply(value, ops.len())
}

fn parse_reply(value: Value, count: usize) -> RedisResult<Reply> {
    let answers = match value {
        Value::BulkString(text) if text == b"EPOCH" => return Ok(Reply::Epoch),
        Value::Array(answers) if answers.len() == count => answers,
        other => return Err(unexpected("write batch", &other)),
    };
    answers.into_iter().map(parse_answer).collect::<RedisResult<_>>().map(Reply::Answers)
}

fn parse_answer(value: Value) -> RedisResult<Answer> {
    let Value::Array(fields) = value else { return Err(unexpected("write answer", &value)) };
    let mut fields = fields.into_iter();
    let status = fields.next();
    let version = fields.next().map(integer).transpose()?;
    match (status, version, fields.next()) {
        (Some(Value::Int(1)), Some(version), None) => Ok(Answer::Applied(version)),
        (Some(Value::Int(0)), Some(version), Some(Value::BulkString(item))) => {
            Ok(Answer::Current { version, item })
        }
        (Some(Value::Int(2)), None, None) => Ok(Answer::Gone),
        (status, ..) => Err(unexpected("write answer", &status.unwrap_or(Value::Nil))),
    }
}

fn integer(value: Value) -> RedisResult<u64> {
    match &value {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::BulkString(text) => std::str::from_utf8(text).ok().and_then(|t| t.parse().ok()),
        _ => None,
    }
    .ok_or_else(|| unexpected("version", &value))
}

fn unexpected(what: &'static str, value: &Value) -> RedisError {
    RedisError::from((ErrorKind::UnexpectedReturnType, what, format!("{value:?}")))
}

/// Sets the epoch if there is none and answers it (see [`CLAIM`]).
pub(super) async fn claim_epoch(
    conn: &mut ConnectionManager,
    keys: &Keys,
    lowest_clock: u64,
) -> RedisResult<Vec<u8>> {
    CLAIM
        .key(keys.epoch())
        .key(keys.clock())
        .arg(format!("{:016x}", fastrand::u64(..)))
        .arg(lowest_clock)
        .invoke_async(conn)
        .await
}

/// One shard as it is at one instant.
#[derive(Debug)]
pub(super) struct Snapshot {
    pub(super) epoch: Option<Vec<u8>>,
    /// The clock: every version written before the snapshot is at most this.
    pub(super) clock: u64,
    /// id → (version, item).
    pub(super) items: Vec<(Vec<u8>, u64, Vec<u8>)>,
}

/// Reads a shard atomically (MULTI): the epoch, the clock and its items with versions.
pub(super) async fn snapshot(
    conn: &mut ConnectionManager,
    keys: &Keys,
    shard: u16,
) -> RedisResult<Snapshot> {
    type Raw = (Option<Vec<u8>>, Option<u64>, Vec<(Vec<u8>, Vec<u8>)>, Vec<(Vec<u8>, Vec<u8>)>);
    let (epoch, clock, items, versions): Raw = redis::pipe()
        .atomic()
        .get(keys.epoch())
        .get(keys.clock())
        .hgetall(keys.items(shard))
        .hgetall(keys.versions(shard))
        .query_async(conn)
        .await?;
    // Tombstones (negative) and anything unreadable are no version.
    let versions: std::collections::HashMap<Vec<u8>, u64> = versions
        .into_iter()
        .filter_map(|(id, v)| Some((id, std::str::from_utf8(&v).ok()?.parse().ok()?)))
        .collect();
    let items = items
        .into_iter()
        .filter_map(|(id, item)| {
            let version = *versions.get(&id)?;
            Some((id, version, item))
        })
        .collect();
    Ok(Snapshot { epoch, clock: clock.unwrap_or(0), items })
}

/// The item and version of one id, in one round trip (MULTI).
pub(super) async fn fetch(
    conn: &mut ConnectionManager,
    keys: &Keys,
    shard: u16,
    id: &[u8],
) -> RedisResult<Option<(u64, Vec<u8>)>> {
    let (item, version): (Option<Vec<u8>>, Option<String>) = redis::pipe()
        .atomic()
        .hget(keys.items(shard), id)
        .hget(keys.versions(shard), id)
        .query_async(conn)
        .await?;
    Ok(match (item, version.and_then(|v| v.parse().ok())) {
        (Some(item), Some(version)) => Some((version, item)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_and_bad_ones_are_errors() {
        let reply = Value::Array(vec![
            Value::Array(vec![Value::Int(1), Value::BulkString(b"7".to_vec())]),
            Value::Array(vec![Value::Int(0), Value::Int(3), Value::BulkString(b"x".to_vec())]),
            Value::Array(vec![Value::Int(2)]),
        ]);
        let Reply::Answers(answers) = parse_reply(reply, 3).unwrap() else { panic!() };
        assert_eq!(
            answers,
            [Answer::Applied(7), Answer::Current { version: 3, item: b"x".to_vec() }, Answer::Gone]
        );
        assert!(matches!(parse_reply(Value::BulkString(b"EPOCH".to_vec()), 1), Ok(Reply::Epoch)));
        assert!(parse_reply(Value::Array(vec![]), 1).is_err());
        assert!(parse_reply(Value::Array(vec![Value::Array(vec![Value::Int(9)])]), 1).is_err());
        let negative = Value::Array(vec![Value::Array(vec![Value::Int(1), Value::Int(-1)])]);
        assert!(parse_reply(negative, 1).is_err());
    }
}
