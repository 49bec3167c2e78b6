//! Decoding objects behind URLs and members of tar shards: fetched or copied to a local
//! file (see Note [Remote objects] and `store::tar`), decoded as files, and every error
//! renamed back to the URL or member path the user gave.
//! A large remote file of fixed-size blocks is fetched only where a request reads it
//! (Note [Ranged reads of remote files], in docs/ARCHITECTURE.md).

use std::path::Path;

use crate::decode::audio::LoadRequest;
use crate::error::Result;

/// Bytes read for a header: every layout `block_layout` reads ends well within this.
const HEAD_BYTES: u64 = 64 * 1024;

/// The local path a `file:` URL names, when `path` is one (decoded there, errors named as
/// the user wrote it).
fn file_url_path(path: &Path) -> Option<Result<std::path::PathBuf>> {
    let local = crate::store::file_url_path(path.to_str()?)?;
    Some(local.map_err(Into::into))
}

/// Run `decode` on `path`, or on a local copy of it when it is a URL or a shard's member.
pub(crate) fn with_local<T>(path: &Path, decode: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    if let Some(local) = file_url_path(path) {
        let local = local?;
        return with_local(&local, decode).map_err(|e| e.renamed(&local, path));
    }
    if let Some((shard, member)) = path.to_str().and_then(crate::store::tar::split_member) {
        let copy = crate::store::tar::member_copy(path, shard, member)?;
        return decode(copy.path()).map_err(|e| e.renamed(copy.path(), path));
    }
    let Some(url) = crate::store::url_of(path) else {
        return decode(path);
    };
    let copy = crate::store::local_copy(url)?;
    decode(copy.path()).map_err(|e| e.renamed(copy.path(), path))
}

/// [`with_local`] for a decode of `req`'s part of `path` alone: a large remote file of
/// fixed-size blocks is fetched only where `req` reads it (Note [Ranged reads of remote
/// files]).
pub(crate) fn with_local_part<T>(
    path: &Path,
    req: &LoadRequest,
    decode: impl FnOnce(&Path) -> Result<T>,
) -> Result<T> {
    if let Some(local) = file_url_path(path) {
        let local = local?;
        return with_local_part(&local, req, decode).map_err(|e| e.renamed(&local, path));
    }
    let is_member = path
        .to_str()
        .and_then(crate::store::tar::split_member)
        .is_some();
    let part = req.offset > 0.0 || req.duration.is_some();
    let url = crate::store::url_of(path).filter(|_| part && !is_member);
    if let Some(url) = url {
        if let Some(copy) = part_copy(url, req)? {
            return decode(copy.path()).map_err(|e| e.renamed(copy.path(), path));
        }
    }
    with_local(path, decode)
}

/// A copy of `url` holding what a decode of `req` reads; `None` when the object is better
/// fetched whole (held already, small, or not a file of fixed-size blocks).
fn part_copy(
    url: &str,
    req: &LoadRequest,
) -> std::result::Result<Option<crate::store::LocalCopy>, crate::store::StoreError> {
    let Some(object) = crate::store::ranged_object(url)? else {
        return Ok(None);
    };
    let head = object.head(HEAD_BYTES)?;
    let Some(layout) = crate::decode::containers::block_layout(&head, object.size()) else {
        return Ok(None);
    };
    let Some((first, last)) = crate::decode::segments::input_span(layout.sample_rate, req) else {
        return Ok(None);
    };
    let frames_per_block = layout.frames_per_block.max(1);
    let data_end = layout
        .declared_len
        .map_or(object.size(), |len| layout.start.saturating_add(len))
        .min(object.size());
    let byte_of = |frame: u64| {
        (frame / frames_per_block)
            .saturating_mul(layout.block_bytes)
            .saturating_add(layout.start)
    };
    // A second of audio on each side: a packet that starts before the part or runs past it.
    let second = byte_of(u64::from(layout.sample_rate)) - layout.start;
    let from = byte_of(first).saturating_sub(second).max(layout.start);
    let to = last.map_or(data_end, |last| {
        byte_of(last.saturating_add(frames_per_block))
            .saturating_add(second)
            .min(data_end)
    });
    // A header longer than what was read (a large chunk before the data) is fetched whole.
    let header = head.len() as u64..layout.start.min(object.size());
    object
        .partial_copy(&head, &[header, from..to.max(from)])
        .map(Some)
}
