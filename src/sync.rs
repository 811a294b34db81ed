//! The one `Mutex` helper: a poisoned lock still hands out its data. Every
//! holder keeps its invariants across each write, so a panic elsewhere never
//! leaves half-written state worth refusing.

use std::sync::{Mutex, MutexGuard};

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
