//! Parts of remote objects read by ranged GETs a block at a time, the blocks kept a while:
//! members of a sidecar-indexed shard (Note [Shard index sidecars]) come in archive order,
//! so one GET serves the members of a block instead of one GET each (a request's latency,
//! not its bytes, is what costs on object storage).

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};

use crate::store::{Stamp, StoreError};

/// Bytes one ranged GET fetches.
const BLOCK: u64 = 2 << 20;
/// Bytes of blocks kept (a few shards read side by side, a block or two each).
const BUDGET: u64 = 32 << 20;

/// A block: the object, its version, the block's number.
type Key = (String, u64, u64);
/// Filled once by whoever fetches it first (others wait); `None` when that fetch failed.
type Cell = Arc<OnceLock<Option<Arc<Vec<u8>>>>>;

#[derive(Default)]
struct Blocks {
    cells: HashMap<Key, Cell>,
    /// Oldest first, for eviction.
    order: VecDeque<Key>,
    bytes: u64,
}

fn blocks() -> std::sync::MutexGuard<'static, Blocks> {
    static BLOCKS: OnceLock<Mutex<Blocks>> = OnceLock::new();
    BLOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Bytes `range` of the object `url` (version `stamp`), through the kept blocks.
pub(super) fn read(url: &str, stamp: Stamp, range: Range<u64>) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(usize::try_from(range.end - range.start).unwrap_or(0));
    let first = range.start / BLOCK;
    let last = range.end.saturating_sub(1) / BLOCK;
    for number in first..=last {
        let block = block(url, stamp, number)?;
        let start = number * BLOCK;
        let from = usize::try_from(range.start.max(start) - start).unwrap_or(usize::MAX);
        let to = usize::try_from(range.end.min(start + BLOCK) - start).unwrap_or(usize::MAX);
        let part = block.get(from..to).ok_or_else(|| StoreError::Invalid {
            url: url.to_string(),
            reason: format!(
                "asked for bytes {}..{}, but the object ends at byte {}",
                range.start,
                range.end,
                start + block.len() as u64
            ),
        })?;
        out.extend_from_slice(part);
    }
    Ok(out)
}

/// `range` widened to whole blocks, within an object of `size` bytes.
pub(super) fn rounded_out(range: &Range<u64>, size: u64) -> (u64, u64) {
    let start = range.start / BLOCK * BLOCK;
    let end = range.end.div_ceil(BLOCK).saturating_mul(BLOCK).min(size);
    (start.min(end), end)
}

/// The object's first `len` bytes (a file's header, read again for each part of it
/// wanted), kept with the blocks.
pub(super) fn head(url: &str, stamp: Stamp, len: u64) -> Result<Arc<Vec<u8>>, StoreError> {
    cached(url, stamp, HEAD_KEY, 0..len.min(stamp.size))
}

/// The key number of an object's header in `Blocks` (no block has it).
const HEAD_KEY: u64 = u64::MAX;

/// Block `number`, fetched unless it is kept or being fetched (then its fetch is awaited).
fn block(url: &str, stamp: Stamp, number: u64) -> Result<Arc<Vec<u8>>, StoreError> {
    let start = number * BLOCK;
    cached(url, stamp, number, start..(start + BLOCK).min(stamp.size))
}

/// Bytes `range` of the object kept as `number`, fetched unless kept or being fetched.
fn cached(
    url: &str,
    stamp: Stamp,
    number: u64,
    range: Range<u64>,
) -> Result<Arc<Vec<u8>>, StoreError> {
    let key: Key = (url.to_string(), stamp.tag, number);
    let cell = Arc::clone(blocks().cells.entry(key.clone()).or_default());
    let fetch = || crate::store::read_range(url, range.clone()).map(Arc::new);
    let mut failure = None;
    let fetched = cell.get_or_init(|| match fetch() {
        Ok(block) => Some(block),
        Err(e) => {
            failure = Some(e);
            None
        }
    });
    match (fetched, failure) {
        (Some(block), _) => {
            keep(&key, block.len() as u64);
            Ok(Arc::clone(block))
        }
        // This thread's fetch failed: forget the cell, so the next asker tries again.
        (None, Some(e)) => {
            blocks().cells.remove(&key);
            Err(e)
        }
        // Another thread's fetch failed: try once more here, uncached.
        (None, None) => fetch(),
    }
}

/// Accounts a block the first time it is seen filled, evicting the oldest past the budget.
fn keep(key: &Key, bytes: u64) {
    let mut blocks = blocks();
    if blocks.order.contains(key) {
        return;
    }
    blocks.order.push_back(key.clone());
    blocks.bytes += bytes;
    while blocks.bytes > BUDGET && blocks.order.len() > 1 {
        let Some(oldest) = blocks.order.pop_front() else {
            break;
        };
        if let Some(cell) = blocks.cells.remove(&oldest) {
            let size = cell
                .get()
                .and_then(Option::as_ref)
                .map_or(0, |b| b.len() as u64);
            blocks.bytes = blocks.bytes.saturating_sub(size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_round_out_to_whole_blocks_within_the_object() {
        assert_eq!(rounded_out(&(100..200), 10 * BLOCK), (0, BLOCK));
        assert_eq!(
            rounded_out(&(BLOCK..BLOCK + 1), 10 * BLOCK),
            (BLOCK, 2 * BLOCK)
        );
        assert_eq!(
            rounded_out(&(BLOCK - 1..BLOCK + 1), 10 * BLOCK),
            (0, 2 * BLOCK)
        );
        // The last block ends with the object.
        assert_eq!(
            rounded_out(&(BLOCK + 5..BLOCK + 9), BLOCK + 7),
            (BLOCK, BLOCK + 7)
        );
    }
}
