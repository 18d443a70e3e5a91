//! The framing of the change events the write script publishes.
//!
//! `kind|member|version|shard|idlen|<id bytes><item bytes>`: text up to the id so Lua builds
//! it with `..`, the length so the id and the item (both binary) split without an escape.

/// One change as published by a write.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Event<'a> {
    /// An upsert (`u`), or a delete (`d`, no item).
    pub(super) upsert: bool,
    /// The member id of the replica that wrote it.
    pub(super) member: &'a [u8],
    pub(super) version: u64,
    pub(super) id: &'a [u8],
    pub(super) item: &'a [u8],
}

/// Parses a payload; `None` for anything malformed (a foreign publisher, a truncated
/// message), never a panic.
pub(super) fn parse(payload: &[u8]) -> Option<Event<'_>> {
    let mut rest = payload;
    let mut field = || {
        let end = rest.iter().position(|&b| b == b'|')?;
        let (head, tail) = rest.split_at(end);
        rest = tail.get(1..)?;
        Some(head)
    };
    let kind = field()?;
    let member = field()?;
    let version = number(field()?)?;
    let _shard = number(field()?)?;
    let id_len = usize::try_from(number(field()?)?).ok()?;
    if rest.len() < id_len {
        return None;
    }
    let (id, item) = rest.split_at(id_len);
    let upsert = match kind {
        b"u" => true,
        b"d" if item.is_empty() => false,
        _ => return None,
    };
    Some(Event { upsert, member, version, id, item })
}

fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upsert_splits_binary_id_and_item() {
        let payload = b"u|abc|42|7|3|a|\x00bitem|x";
        let event = parse(payload).unwrap();
        assert_eq!(
            event,
            Event { upsert: true, member: b"abc", version: 42, id: b"a|\x00", item: b"bitem|x" }
        );
    }

    #[test]
    fn a_delete_has_no_item() {
        let event = parse(b"d|m|9|0|2|id").unwrap();
        assert!(!event.upsert);
        assert_eq!((event.version, event.id, event.item), (9, &b"id"[..], &b""[..]));
        assert!(parse(b"d|m|9|0|1|id").is_none(), "a delete with trailing bytes");
    }

    #[test]
    fn malformed_payloads_are_none() {
        for bad in [
            &b""[..],
            b"u",
            b"u|m|",
            b"u|m|x|0|1|a",
            b"u|m|1|0|5|abc",
            b"x|m|1|0|1|a",
            b"u|m|-1|0|1|a",
            b"u|m|99999999999999999999|0|1|a",
            b"u|m|1|0||a",
        ] {
            assert!(parse(bad).is_none(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
