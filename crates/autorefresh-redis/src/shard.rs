//! Which shard an id belongs to, and the set of shards a replica holds.

use std::sync::atomic::{AtomicU64, Ordering};

/// The shard of an id, from its encoded bytes: FNV-1a, the same on every machine and build
/// (std's and foldhash's hashers are seeded or may change between releases).
pub(crate) fn shard_of(encoded_id: &[u8], shards: u16) -> u16 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let hash =
        encoded_id.iter().fold(OFFSET, |hash, &byte| (hash ^ u64::from(byte)).wrapping_mul(PRIME));
    // Fold the high bits in: FNV's low bits alone mix poorly for short keys.
    let folded = hash ^ (hash >> 32);
    u16::try_from(folded % u64::from(shards.max(1))).unwrap_or(0)
}

/// The shards whose lease this replica holds: a bitset read by every sweep, written by the
/// lease loop.
#[derive(Debug)]
pub(crate) struct OwnedShards {
    words: Box<[AtomicU64]>,
}

impl OwnedShards {
    pub(crate) fn new(shards: u16) -> Self {
        let words = usize::from(shards).div_ceil(64);
        Self { words: (0..words).map(|_| AtomicU64::new(0)).collect() }
    }

    pub(crate) fn contains(&self, shard: u16) -> bool {
        let (word, bit) = Self::position(shard);
        self.words.get(word).is_some_and(|w| w.load(Ordering::Relaxed) & bit != 0)
    }

    /// Adds `shard`; returns whether it was not there.
    pub(crate) fn insert(&self, shard: u16) -> bool {
        let (word, bit) = Self::position(shard);
        self.words.get(word).is_some_and(|w| w.fetch_or(bit, Ordering::Relaxed) & bit == 0)
    }

    /// Removes `shard`; returns whether it was there.
    pub(crate) fn remove(&self, shard: u16) -> bool {
        let (word, bit) = Self::position(shard);
        self.words.get(word).is_some_and(|w| w.fetch_and(!bit, Ordering::Relaxed) & bit != 0)
    }

    /// The shards held now, in order.
    pub(crate) fn to_vec(&self) -> Vec<u16> {
        let mut shards = Vec::new();
        for (index, word) in self.words.iter().enumerate() {
            let mut bits = word.load(Ordering::Relaxed);
            while bits != 0 {
                let bit = bits.trailing_zeros();
                bits &= bits - 1;
                if let Ok(shard) = u16::try_from(index * 64 + bit as usize) {
                    shards.push(shard);
                }
            }
        }
        shards
    }

    pub(crate) fn len(&self) -> usize {
        self.words.iter().map(|w| w.load(Ordering::Relaxed).count_ones() as usize).sum()
    }

    fn position(shard: u16) -> (usize, u64) {
        (usize::from(shard) / 64, 1 << (shard % 64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(shard_of(b"job-1", 64), shard_of(b"job-1", 64));
        let mut counts = [0_u32; 16];
        for i in 0..16_000 {
            counts[usize::from(shard_of(format!("job-{i}").as_bytes(), 16))] += 1;
        }
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
        assert_eq!(shard_of(b"anything", 1), 0);
    }

    #[test]
    fn the_owned_set_inserts_removes_and_lists() {
        let owned = OwnedShards::new(130);
        assert!(owned.insert(0) && owned.insert(64) && owned.insert(129));
        assert!(!owned.insert(64));
        assert!(owned.contains(129) && !owned.contains(1));
        assert_eq!(owned.to_vec(), [0, 64, 129]);
        assert!(owned.remove(64) && !owned.remove(64));
        assert_eq!(owned.len(), 2);
        assert!(!owned.insert(500), "out of range is never held");
    }
}
