//! Parts of remote objects read by ranged GETs a block at a time, the blocks kept a while:
//! members of a sidecar-indexed shard (Note [Shard index sidecars]) come in archive order,
//! so one GET serves the members of a block instead of one GET each (a request's latency,
//! not its bytes, is what costs on object storage).
//!
//! Blocks are fetched objects in parts, so they live where whole fetched objects do — in
//! memory files — and within a share of the object cache's bound: a stream reads the
//! shards of its shuffle window side by side, and blocks evicted before all their members
//! were read are fetched again (a fixed 32 MiB made 2,293 GETs of 64 shards' 333 blocks).

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};

use crate::store::{Stamp, StoreError};
use crate::sys::MemFile;

/// Bytes one ranged GET fetches.
const BLOCK: u64 = 2 << 20;
/// Bytes of blocks kept at least; at most a quarter of what the object cache may hold.
const MIN_BUDGET: u64 = 32 << 20;

fn budget() -> u64 {
    (super::cache::objects().capacity() / 4).max(MIN_BUDGET)
}

/// A block: the object, its version, the block's number.
type Key = (String, u64, u64);
/// Filled once by whoever fetches it first (others wait); `None` when that fetch failed.
type Cell = Arc<OnceLock<Option<Arc<Block>>>>;

/// A block's bytes, in a memory file.
struct Block {
    file: MemFile,
    len: u64,
}

impl Block {
    fn of(url: &str, bytes: &[u8]) -> Result<Self, StoreError> {
        let failed = |e: std::io::Error| StoreError::Local {
            url: url.to_string(),
            reason: format!("cannot keep fetched bytes in a memory file: {e}"),
        };
        let file = MemFile::new("block").map_err(failed)?;
        file.write_all_at(bytes, 0).map_err(failed)?;
        Ok(Self {
            file,
            len: bytes.len() as u64,
        })
    }

    /// Bytes `from..to` of the block, appended to `out`; `None` past its end.
    fn read_into(&self, from: u64, to: u64, out: &mut Vec<u8>) -> Option<std::io::Result<()>> {
        if to > self.len || from > to {
            return None;
        }
        let at = out.len();
        out.resize(at + usize::try_from(to - from).ok()?, 0);
        Some(self.file.read_exact_at(&mut out[at..], from))
    }
}

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
        let from = range.start.max(start) - start;
        let to = range.end.min(start + BLOCK) - start;
        read_block(url, &block, from..to, &mut out)?;
    }
    Ok(out)
}

fn read_block(
    url: &str,
    block: &Block,
    range: Range<u64>,
    out: &mut Vec<u8>,
) -> Result<(), StoreError> {
    match block.read_into(range.start, range.end, out) {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(StoreError::Local {
            url: url.to_string(),
            reason: format!("cannot read fetched bytes back from memory: {e}"),
        }),
        None => Err(StoreError::Invalid {
            url: url.to_string(),
            reason: format!(
                "asked for {} bytes of a block of {}: the object is shorter",
                range.end - range.start.min(range.end),
                block.len
            ),
        }),
    }
}

/// `range` widened to whole blocks, within an object of `size` bytes.
pub(super) fn rounded_out(range: &Range<u64>, size: u64) -> (u64, u64) {
    let start = range.start / BLOCK * BLOCK;
    let end = range.end.div_ceil(BLOCK).saturating_mul(BLOCK).min(size);
    (start.min(end), end)
}

/// The object's first `len` bytes (a file's header, read again for each part of it
/// wanted), kept with the blocks.
pub(super) fn head(url: &str, stamp: Stamp, len: u64) -> Result<Vec<u8>, StoreError> {
    let head = cached(url, stamp, HEAD_KEY, 0..len.min(stamp.size))?;
    let mut out = Vec::new();
    read_block(url, &head, 0..head.len, &mut out)?;
    Ok(out)
}

/// The key number of an object's header in `Blocks` (no block has it).
const HEAD_KEY: u64 = u64::MAX;

/// Block `number`, fetched unless it is kept or being fetched (then its fetch is awaited).
fn block(url: &str, stamp: Stamp, number: u64) -> Result<Arc<Block>, StoreError> {
    let start = number * BLOCK;
    cached(url, stamp, number, start..(start + BLOCK).min(stamp.size))
}

/// Bytes `range` of the object kept as `number`, fetched unless kept or being fetched.
fn cached(
    url: &str,
    stamp: Stamp,
    number: u64,
    range: Range<u64>,
) -> Result<Arc<Block>, StoreError> {
    let key: Key = (url.to_string(), stamp.tag, number);
    let cell = Arc::clone(blocks().cells.entry(key.clone()).or_default());
    let fetch = || {
        let bytes = crate::store::read_range(url, range.clone())?;
        Block::of(url, &bytes).map(Arc::new)
    };
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
            keep(&key, block.len);
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
    let budget = budget();
    while blocks.bytes > budget && blocks.order.len() > 1 {
        let Some(oldest) = blocks.order.pop_front() else {
            break;
        };
        if let Some(cell) = blocks.cells.remove(&oldest) {
            let size = cell.get().and_then(Option::as_ref).map_or(0, |b| b.len);
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
