//! The synchronization primitives of the work queue: `parking_lot` and std's atomics, or
//! loom's when the queue is model-checked (`RUSTFLAGS="--cfg autorefresh_loom"`, see
//! `queue::model`).

#[cfg(not(autorefresh_loom))]
pub(crate) use parking_lot::Mutex;
#[cfg(not(autorefresh_loom))]
pub(crate) use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

#[cfg(autorefresh_loom)]
pub(crate) use loom::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

/// loom's mutex, with `parking_lot`'s signature (no poisoning to handle).
#[cfg(autorefresh_loom)]
#[derive(Debug, Default)]
pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

#[cfg(autorefresh_loom)]
impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(loom::sync::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
