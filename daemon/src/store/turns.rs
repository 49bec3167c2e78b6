//! One thread at a time per key (an object's URL, a shard): a second asker waits for the
//! first to finish, then looks for what it left (a fetched copy, a built index) before
//! doing the work itself.

use std::collections::HashSet;
use std::sync::{Condvar, Mutex};

#[derive(Default)]
pub(super) struct Turns {
    held: Mutex<HashSet<String>>,
    released: Condvar,
}

/// The right to do one key's work, until dropped (an error or a panic lets the waiters go
/// too).
pub(super) struct Turn<'a> {
    turns: &'a Turns,
    key: String,
}

impl Turns {
    /// Waits while another thread holds `key`'s turn (bounded: every holder's waits on the
    /// network are), then takes it.
    pub(super) fn take(&self, key: &str) -> Turn<'_> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        while held.contains(key) {
            held = self.released.wait(held).unwrap_or_else(|e| e.into_inner());
        }
        held.insert(key.to_string());
        Turn {
            turns: self,
            key: key.to_string(),
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut held = self.turns.held.lock().unwrap_or_else(|e| e.into_inner());
        held.remove(&self.key);
        self.turns.released.notify_all();
    }
}
