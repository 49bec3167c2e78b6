//! Decoding objects behind URLs and members of tar shards: fetched or copied to a local
//! file (see Note [Remote objects] and `store::tar`), decoded as files, and every error
//! renamed back to the URL or member path the user gave.

use std::path::Path;

use crate::error::Result;

/// Run `decode` on `path`, or on a local copy of it when it is a URL or a shard's member.
pub(crate) fn with_local<T>(path: &Path, decode: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
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
