//! [`Stamps`]: when each ring slot's entry was last used, readable and writable without a
//! lock.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// log2 of the size of the first segment.
const FIRST_SHIFT: u32 = 6;

/// Enough segments for any `usize` index: segment `k` holds `64 << k` stamps.
const SEGMENTS: usize = (usize::BITS - FIRST_SHIFT + 1) as usize;

/// A growable array of use stamps that readers index without a lock while the writer grows
/// it.
///
/// It is split into segments of doubling size (64, 128, 256, ...), each allocated once, the
/// first time a slot in it is [`ensure`](Stamps::ensure)d, and never moved: a reader that
/// found a slot index in the map finds its stamp in place. The stamps are dense (4 bytes per
/// entry), so the eviction's scan of a window of slots touches two cache lines, and a stamp
/// already current is only read, so hot reads do not write shared cache lines.
pub(crate) struct Stamps {
    segments: Box<[OnceLock<Box<[AtomicU32]>>]>,
}

impl Stamps {
    /// No stamp allocated yet.
    pub(crate) fn new() -> Self {
        Self { segments: (0..SEGMENTS).map(|_| OnceLock::new()).collect() }
    }

    /// The segment and the offset in it of slot `index`.
    #[inline]
    fn locate(index: usize) -> (usize, usize) {
        let block = (index >> FIRST_SHIFT) + 1;
        let segment = (usize::BITS - 1 - block.leading_zeros()) as usize;
        let start = ((1_usize << segment) - 1) << FIRST_SHIFT;
        (segment, index - start)
    }

    /// The stamp of slot `index`, if its segment was allocated.
    #[inline]
    fn slot(&self, index: usize) -> Option<&AtomicU32> {
        let (segment, offset) = Self::locate(index);
        self.segments[segment].get().map(|stamps| &stamps[offset])
    }

    /// Allocates the segment holding slot `index`, if it is not yet.
    pub(crate) fn ensure(&self, index: usize) {
        let (segment, _) = Self::locate(index);
        self.segments[segment]
            .get_or_init(|| (0..64_usize << segment).map(|_| AtomicU32::new(0)).collect());
    }

    /// Stamps slot `index` with `now`, writing only if it holds another stamp.
    #[inline]
    pub(crate) fn touch(&self, index: usize, now: u32) {
        if let Some(stamp) = self.slot(index) {
            if stamp.load(Ordering::Relaxed) != now {
                stamp.store(now, Ordering::Relaxed);
            }
        }
    }

    /// The stamp of slot `index` (0 if never allocated).
    pub(crate) fn get(&self, index: usize) -> u32 {
        self.slot(index).map_or(0, |stamp| stamp.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_tile_the_indices() {
        assert_eq!(Stamps::locate(0), (0, 0));
        assert_eq!(Stamps::locate(63), (0, 63));
        assert_eq!(Stamps::locate(64), (1, 0));
        assert_eq!(Stamps::locate(191), (1, 127));
        assert_eq!(Stamps::locate(192), (2, 0));
        // Any index has a segment (the last one is only ever partly reachable).
        assert_eq!(Stamps::locate(usize::MAX), (SEGMENTS - 1, 63));
        let mut expected = (0, 0);
        for index in 0..10_000 {
            assert_eq!(Stamps::locate(index), expected, "index {index}");
            expected.1 += 1;
            if expected.1 == 64 << expected.0 {
                expected = (expected.0 + 1, 0);
            }
        }
    }

    #[test]
    fn stamps_start_at_zero_and_keep_the_last_touch() {
        let stamps = Stamps::new();
        stamps.touch(5, 9); // not allocated yet: ignored
        assert_eq!(stamps.get(5), 0);
        stamps.ensure(5);
        assert_eq!(stamps.get(5), 0);
        stamps.touch(5, 3);
        stamps.touch(5, 3);
        assert_eq!(stamps.get(5), 3);
        stamps.ensure(1_000);
        stamps.touch(1_000, 7);
        assert_eq!((stamps.get(999), stamps.get(1_000)), (0, 7));
    }
}
