//! Tar shards (WebDataset, Lhotse Shar, NeMo tarred audio): an index of members by name,
//! and one member's bytes as a memory file the decoders read by path.
//!
//! A member is named `SHARD#MEMBER` (`s3://b/train-000003.tar#utt17.flac`): the shard's
//! path or URL, `#`, the member's name in the archive. A shard's index is built once per
//! version of the shard (size and modification time, or ETag) and revalidated when a stream
//! opens (`index`); decoding a member then trusts that version (`member_copy`), so an epoch
//! makes no request per member beyond the shard's one fetch.
//!
//! Note [Shard index sidecars]: a remote shard with an index beside it
//! (`.audiodecode-index/SHARD.idx`, JSON:
//! the shard's size and each member's name, offset and size — `audiodecode shard` writes
//! one per tar, `audiodecode shard --index` for tars written by other tools) is not
//! fetched: opening a stream reads the small sidecar, and each member is one ranged GET of
//! its tar header and data. The header must be a valid tar header stating the member's
//! size, so a sidecar left over from another version of the shard is an error, never
//! wrong audio. A sidecar whose size is not the shard's is ignored (the shard is fetched
//! and indexed as before).
//!
//! Note [Large remote shards streamed to be indexed]: a remote shard without an index
//! larger than an eighth of an in-memory object cache's bound (eight shards are indexed at
//! once), or than a cache directory's whole bound, is piped through the tar reader as it
//! arrives, never held, and its members are then read by ranged GETs as with a sidecar:
//! opening a stream of 1 GB shards does not hold 8 GB in memory, and a shard larger than
//! the cache can be read at all. Smaller shards are fetched into the cache and read from
//! there in the epoch, one download each.
//!
//! Note [Learnt shard indexes]: a remote shard with no sidecar is fetched whole to be indexed
//! the first time a stream opens it. The index learnt is kept on local disk under the
//! shard's URL and version (`$AUDIODECODE_INDEX_CACHE`, by default
//! `~/.cache/audiodecode/shard-indexes`; empty keeps none), so a later stream — a restarted
//! daemon, a job resumed from `state_dict()` — reads the shard as if it had a sidecar, by
//! ranged GETs, instead of fetching the dataset again before its first batch. A changed shard
//! (another size or ETag) is fetched and learnt again; a damaged one is never kept. With a
//! cache directory (`--object-cache DIR`) the shards' copies are kept instead, and read.
//! Compressed shards, local or remote, have their indexes learnt too (offsets into the
//! inflated bytes, whose length the index keeps): members are still read from an inflated
//! copy, made when a stream first reads one (Note [Compressed shards]).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::DecodeError;
use crate::store::inflate::is_compressed;
use crate::store::turns::Turns;
use crate::store::{Stamp, StoreError};
use crate::sys::MemFile;

/// One file in the archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarMember {
    pub name: String,
    /// Where its data starts in the shard.
    pub offset: u64,
    pub size: u64,
    /// Stored as a sparse file (`tar --sparse`, or a tar of a file with holes): its bytes in
    /// the archive are a map and the data without the holes, not the file, so reading it
    /// fails with the reason (Note [Sparse tar members]).
    pub sparse: bool,
}

impl TarMember {
    /// The member of an archive that starts `base` bytes into the shard.
    fn moved_by(self, base: u64) -> Self {
        TarMember {
            offset: self.offset + base,
            ..self
        }
    }
}

/// A shard's members in archive order, and what stopped the reading early, if anything.
#[derive(Debug)]
pub struct ShardIndex {
    pub shard: String,
    pub stamp: Stamp,
    pub members: Vec<TarMember>,
    by_name: HashMap<String, usize>,
    /// Why the archive could not be read to its end (members after it are lost).
    pub damage: Option<String>,
    /// Where the index came from, and so how members are read.
    source: IndexSource,
}

/// Where a shard's index came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IndexSource {
    /// The shard's bytes, local or a fetched copy: members are read from them.
    Archive,
    /// Members read by ranged GETs: the index from a sidecar (Note [Shard index sidecars]),
    Sidecar,
    /// learnt by an earlier stream (Note [Learnt shard indexes]),
    Learnt,
    /// or read from the shard streamed through the tar reader (Note [Large remote shards
    /// streamed to be indexed]).
    Streamed,
}

impl ShardIndex {
    /// Whether members are read by ranged GETs (no copy of the shard is held).
    fn ranged(&self) -> bool {
        self.source != IndexSource::Archive
    }

    /// The member called `name`; for `STEM.*` ([`any_audio_member`]), `STEM.EXT` with the
    /// first extension of `AUDIO_EXTENSIONS` the shard has. A name with directories the
    /// shard does not have is found by its base name: NeMo's tarred manifests may keep the
    /// path the audio was tarred from (`/data/set/utt1.wav`, member `utt1.wav`).
    pub fn member(&self, name: &str) -> Option<&TarMember> {
        if let Some(stem) = name.strip_suffix(ANY_AUDIO) {
            return crate::decode::AUDIO_EXTENSIONS
                .iter()
                .find_map(|ext| self.by_name.get(&format!("{stem}.{ext}")))
                .map(|&i| &self.members[i]);
        }
        self.by_name
            .get(name)
            .or_else(|| self.by_name.get(base_name(name)))
            .map(|&i| &self.members[i])
    }
}

/// A member name without its directories.
pub fn base_name(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// The suffix of a member name that stands for any audio extension.
const ANY_AUDIO: &str = ".*";

/// The member name for `stem`'s audio, whatever its extension (a Lhotse Shar cut's
/// `ID.flac`, `ID.wav`, … named before the tar is read).
pub fn any_audio_member(stem: &str) -> String {
    format!("{stem}{ANY_AUDIO}")
}

/// How shard names end: plain tars, and gzip-compressed ones (Note [Compressed shards]).
const SHARD_SUFFIXES: [&str; 3] = [".tar", ".tar.gz", ".tgz"];

/// `SHARD#MEMBER` split at the last `.tar#` (`.tar.gz#`, `.tgz#`), or a shard URL with a
/// query (a signed URL, `…/a.tar?sig=…#MEMBER`) at the `#` after its query; `None` for any
/// other path.
pub fn split_member(path: &str) -> Option<(&str, &str)> {
    let at = SHARD_SUFFIXES
        .iter()
        .filter_map(|suffix| Some(path.rfind(&format!("{suffix}#"))? + suffix.len()))
        .max();
    if let Some(at) = at {
        return Some((&path[..at], &path[at + 1..]));
    }
    let query = path.find('?')?;
    let hash = query + path[query..].find('#')?;
    SHARD_SUFFIXES
        .iter()
        .any(|suffix| path[..query].ends_with(suffix))
        .then(|| (&path[..hash], &path[hash + 1..]))
}

/// The member path of `member` in `shard`.
pub fn member_path(shard: &str, member: &str) -> String {
    format!("{shard}#{member}")
}

fn indexes() -> &'static Mutex<HashMap<String, Arc<ShardIndex>>> {
    static INDEXES: OnceLock<Mutex<HashMap<String, Arc<ShardIndex>>>> = OnceLock::new();
    INDEXES.get_or_init(Default::default)
}

/// Shards whose index is kept; past this the oldest are dropped (and rebuilt on use).
const INDEXES_KEPT: usize = 100_000;

fn lock() -> std::sync::MutexGuard<'static, HashMap<String, Arc<ShardIndex>>> {
    indexes().lock().unwrap_or_else(|e| e.into_inner())
}

/// The shard's index, rebuilt if the shard changed since it was made (a stat of a file, a
/// HEAD request for an object unless one was made within a second).
pub fn index(shard: &str) -> Result<Arc<ShardIndex>, StoreError> {
    remembered(shard, || index_now(shard))
}

/// Note [Failed shards]: a shard that cannot be read (missing, forbidden, unreachable after
/// the store's retries, not a tar) fails every one of its samples the same way, and each
/// sample asks several times (its probe, its decode, its damage check). Within a stream's
/// epoch the first failure is kept and reported once; the shard's other samples get the
/// same error, per `on_error`, without another request. The next epoch (a new stream) asks
/// again: the shard may have been fixed. Outside a stream (`load`, the CLI) nothing is kept.
#[derive(Default)]
pub struct ShardFailures(Mutex<HashMap<String, StoreError>>);

thread_local! {
    /// The failures of the stream whose work this thread is doing, if any.
    static FAILURES: std::cell::RefCell<Option<Arc<ShardFailures>>> =
        const { std::cell::RefCell::new(None) };
}

impl ShardFailures {
    /// Runs `work` on this thread with shard failures kept in `failures`.
    pub fn within<T>(failures: &Arc<Self>, work: impl FnOnce() -> T) -> T {
        /// Puts back the outer scope even when `work` panics (the pool catches panics and
        /// runs other streams' jobs on this thread).
        struct Restore(Option<Arc<ShardFailures>>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let outer = self.0.take();
                FAILURES.with(|f| *f.borrow_mut() = outer);
            }
        }
        let outer = FAILURES.with(|f| f.replace(Some(Arc::clone(failures))));
        let _restore = Restore(outer);
        work()
    }

    /// The failures kept on this thread (for threads it starts).
    pub fn current() -> Option<Arc<Self>> {
        FAILURES.with(|f| f.borrow().clone())
    }

    fn get(&self, shard: &str) -> Option<StoreError> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(shard)
            .cloned()
    }

    /// Keeps `err` for `shard`, said in the log the first time.
    fn keep(&self, shard: &str, err: &StoreError) {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if kept.contains_key(shard) {
            return;
        }
        kept.insert(shard.to_string(), err.clone());
        drop(kept);
        log::warn!(
            "{err}; the shard's samples fail with this error for the rest of the epoch \
             (it is not requested again until the next)"
        );
    }
}

/// The failure kept for `shard` in this thread's stream, if any.
fn failed(shard: &str) -> Option<StoreError> {
    ShardFailures::current().and_then(|failures| failures.get(shard))
}

/// `read` of `shard`, unless the shard already failed in this thread's stream (Note
/// [Failed shards]): then its first error again, without a request.
fn remembered<T>(
    shard: &str,
    read: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let Some(failures) = ShardFailures::current() else {
        return read();
    };
    if let Some(err) = failures.get(shard) {
        return Err(err);
    }
    let result = read();
    if let Err(err) = &result {
        failures.keep(shard, err);
    }
    result
}

fn index_now(shard: &str) -> Result<Arc<ShardIndex>, StoreError> {
    // Workers that first read members of one shard at once (a Shar recording tar) index it
    // once: the others wait for that index instead of fetching the shard again, and for a
    // shard that fails, take its failure, kept before the turn is let go (Note [Failed
    // shards]), instead of asking the store again each.
    let _turn = builds().take(shard);
    if let Some(err) = failed(shard) {
        return Err(err);
    }
    let index = index_in_turn(shard);
    if let (Err(err), Some(failures)) = (&index, ShardFailures::current()) {
        failures.keep(shard, err);
    }
    index
}

fn index_in_turn(shard: &str) -> Result<Arc<ShardIndex>, StoreError> {
    let stamp = current_stamp(shard)?;
    if let Some(index) = lock().get(shard).filter(|i| i.stamp == stamp).cloned() {
        return Ok(index);
    }
    // Note [Compressed shards]: read from an inflated copy, as a local tar is; an index
    // learnt earlier spares a new stream inflating every shard before its first batch.
    let compressed = is_compressed(shard);
    if compressed {
        if let Some(members) = learnt_members(shard, stamp) {
            return Ok(keep(shard, stamp, members, None, IndexSource::Archive));
        }
    }
    let url = crate::store::url_of(Path::new(shard)).filter(|_| !compressed);
    // A cache directory keeps the shards themselves across runs: reading a kept copy beats
    // ranged GETs, so learnt indexes are for the memory cache only.
    let on_disk = crate::store::cache_on_disk();
    if url.is_some() {
        if let Some(members) = sidecar_members(shard, stamp) {
            return Ok(keep(shard, stamp, members, None, IndexSource::Sidecar));
        }
        if let Some(members) = (!on_disk).then(|| learnt_members(shard, stamp)).flatten() {
            return Ok(keep(shard, stamp, members, None, IndexSource::Learnt));
        }
    }
    // Up to INDEX_THREADS shards are fetched at once to be indexed: in memory they must
    // fit together; on disk each must fit.
    let most_held = crate::store::cache_capacity() / if on_disk { 1 } else { INDEX_THREADS as u64 };
    let index = match url {
        Some(url) if stamp.size > most_held => {
            // Note [Large remote shards streamed to be indexed]
            let (stamp, read) = streamed_members(url)?;
            readable(shard, stamp, read, IndexSource::Streamed)?
        }
        _ => {
            let (file, stamp, _copy) = open_shard(shard, Some(stamp))?;
            build(shard, file, stamp)?
        }
    };
    if (url.is_some() || compressed) && index.damage.is_none() {
        keep_learnt(&index);
    }
    Ok(index)
}

/// Shards indexed at once when a stream opens.
pub const INDEX_THREADS: usize = 8;

/// One thread builds a shard's index at a time.
fn builds() -> &'static Turns {
    static BUILDS: OnceLock<Turns> = OnceLock::new();
    BUILDS.get_or_init(Default::default)
}

/// Keeps the index of the members read from `shard`; an archive damaged before its first
/// member is an error.
fn readable(
    shard: &str,
    stamp: Stamp,
    (members, damage): MembersRead,
    source: IndexSource,
) -> Result<Arc<ShardIndex>, StoreError> {
    if members.is_empty() {
        if let Some(reason) = damage {
            return Err(StoreError::Invalid {
                url: shard.to_string(),
                reason: format!("not a readable tar archive: {reason}"),
            });
        }
    }
    Ok(keep(shard, stamp, members, damage, source))
}

/// The members of the index learnt for this version of `shard`, if one was kept.
fn learnt_members(shard: &str, stamp: Stamp) -> Option<Vec<TarMember>> {
    let parsed = crate::store::learnt::read(shard, stamp)?;
    // A compressed shard's members lie in its inflated bytes, whose length the index keeps.
    let size = match is_compressed(shard) {
        true => parsed["inflated_size"].as_u64()?,
        false => stamp.size,
    };
    let members = listed_members(&parsed, size)?;
    log::debug!("{shard}: index learnt by an earlier stream");
    Some(members)
}

/// Drops the learnt index of `shard`, on disk and in memory.
fn forget_learnt(shard: &str) {
    crate::store::learnt::forget(shard);
    lock().remove(shard);
}

/// Keeps a remote shard's index for later streams.
fn keep_learnt(index: &ShardIndex) {
    let mut json = index_json(index.stamp.size, &index.members);
    if is_compressed(&index.shard) {
        let end = index.members.iter().map(|m| m.offset + m.size).max();
        json["inflated_size"] = end.unwrap_or(0).into();
    }
    crate::store::learnt::keep(&index.shard, index.stamp, json);
}

/// The directory beside the shards that holds their sidecars: a file next to them would be
/// taken for one of a Lhotse Shar field's shards (Lhotse lists `recording.*`).
const SIDECAR_DIR: &str = ".audiodecode-index";

/// Where a shard's index sidecar is: `DIR/.audiodecode-index/NAME.tar.idx`.
pub fn sidecar_of(shard: &str) -> String {
    match shard.rsplit_once('/') {
        Some((dir, name)) => format!("{dir}/{SIDECAR_DIR}/{name}.idx"),
        None => format!("{SIDECAR_DIR}/{shard}.idx"),
    }
}

pub(super) const SIDECAR_FORMAT: &str = "audiodecode-tar-index";

/// Writes the index sidecar of the tar `shard` beside it (Note [Shard index sidecars]): a
/// local file, or an object — streamed once through the tar reader, never held whole, and
/// the sidecar written to the store (`s3://`, `gs://`, `az://`; most HTTP servers refuse).
pub fn write_sidecar(shard: &str) -> Result<(), StoreError> {
    if is_compressed(shard) {
        return Err(StoreError::Invalid {
            url: shard.to_string(),
            reason: "a compressed shard's members cannot be read at offsets, so an index \
                     does not help; store it as a plain .tar to read it by ranged GETs"
                .into(),
        });
    }
    if crate::store::has_query(shard) {
        return Err(StoreError::Invalid {
            url: shard.to_string(),
            reason: "a URL with a query string has no place beside it for a sidecar; \
                     index the shard by its bucket URL (s3://, gs://, az://)"
                .into(),
        });
    }
    let (size, members) = match crate::store::url_of(Path::new(shard)) {
        Some(url) => {
            let (stamp, read) = streamed_members(url)?;
            (stamp.size, whole_archive(url, read)?)
        }
        None => {
            let file = crate::sys::open_regular_file(Path::new(shard))
                .map_err(|e| local_error(shard, &e))?;
            let size = file.metadata().map_err(|e| local_error(shard, &e))?.len();
            (size, whole_archive(shard, read_members(file))?)
        }
    };
    let sidecar = index_json(size, &members).to_string().into_bytes();
    let at = sidecar_of(shard);
    if crate::store::is_url(&at) {
        return crate::store::write(&at, sidecar);
    }
    let path = std::path::PathBuf::from(&at);
    let written = match path.parent() {
        Some(dir) => std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, sidecar)),
        None => std::fs::write(&path, sidecar),
    };
    written.map_err(|e| StoreError::Local {
        url: at.clone(),
        reason: format!("cannot write the index: {e}"),
    })
}

/// A shard's index as JSON: the shard's size and each member's name, offset and size.
fn index_json(size: u64, members: &[TarMember]) -> serde_json::Value {
    let members: Vec<serde_json::Value> = members
        .iter()
        .map(|m| match m.sparse {
            true => serde_json::json!([m.name, m.offset, m.size, true]),
            false => serde_json::json!([m.name, m.offset, m.size]),
        })
        .collect();
    serde_json::json!({
        "format": SIDECAR_FORMAT,
        "version": 1,
        "size": size,
        "members": members,
    })
}

/// The members an index lists, if each lies inside a shard of `size` bytes.
fn listed_members(index: &serde_json::Value, size: u64) -> Option<Vec<TarMember>> {
    index["members"]
        .as_array()?
        .iter()
        .map(|m| {
            Some(TarMember {
                name: m.get(0)?.as_str()?.to_string(),
                offset: m.get(1)?.as_u64()?,
                size: m.get(2)?.as_u64()?,
                sparse: m.get(3).and_then(serde_json::Value::as_bool) == Some(true),
            })
        })
        .collect::<Option<Vec<_>>>()
        .filter(|members| {
            members
                .iter()
                .all(|m| m.offset >= 512 && m.offset.saturating_add(m.size) <= size)
        })
}

/// The members of an archive read to its end; damage anywhere is an error (an index must
/// list every member).
fn whole_archive(
    shard: &str,
    (members, damage): MembersRead,
) -> Result<Vec<TarMember>, StoreError> {
    match damage {
        Some(damage) => Err(StoreError::Invalid {
            url: shard.to_string(),
            reason: format!("not a readable tar archive: {damage}"),
        }),
        None => Ok(members),
    }
}

/// The version and members of the remote tar `url` (with what stopped the reading early,
/// if anything), its body piped through the tar reader as it arrives (a shard may be larger
/// than memory).
fn streamed_members(url: &str) -> Result<(Stamp, MembersRead), StoreError> {
    let (reader, mut writer) = std::io::pipe().map_err(|e| StoreError::Unreachable {
        url: url.to_string(),
        reason: format!("cannot open a pipe: {e}"),
    })?;
    let (fetched, read) = std::thread::scope(|scope| {
        let reading = scope.spawn(move || {
            let mut body = Counted {
                inner: std::io::BufReader::with_capacity(1 << 20, reader),
                count: 0,
            };
            let read = streamed_archives(&mut body);
            // Drain what is left (the end-of-archive blocks), so the transfer completes.
            let _ = std::io::copy(&mut body, &mut std::io::sink());
            read
        });
        // The writer goes with the fetch: its end is the reader's end of file.
        let fetched = crate::store::stream(url, &mut writer);
        drop(writer);
        let read = reading
            .join()
            .unwrap_or_else(|_| (Vec::new(), Some("the tar reader panicked".into())));
        (fetched, read)
    });
    Ok((fetched?, read))
}

/// The members of the archives in `body`, read as it arrives, joined archives read on (Note
/// [Joined tar archives]).
fn streamed_archives<R: Read>(body: &mut Counted<R>) -> MembersRead {
    let mut all = Vec::new();
    let mut base = 0;
    let mut header: Option<[u8; 512]> = None;
    loop {
        // The next archive's first header was read to find it: it is given back first.
        let first = header.take().map_or_else(Vec::new, |h| h.to_vec());
        let first_len = first.len() as u64;
        let before = body.count;
        let mut archive = tar::Archive::new(std::io::Cursor::new(first).chain(&mut *body));
        let (members, damage) = match archive.entries() {
            Ok(entries) => members_of(entries),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        drop(archive);
        all.extend(members.into_iter().map(|m| m.moved_by(base)));
        if damage.is_some() {
            return (all, damage);
        }
        let stopped = base + first_len + (body.count - before);
        match next_archive(body, stopped) {
            Some((at, next)) => (base, header) = (at, Some(next)),
            None => return (all, None),
        }
    }
}

/// A reader that counts the bytes read through it.
struct Counted<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// The members a remote shard's sidecar lists, when it has one made for a shard of this
/// size; `None` sends the caller to fetch and index the shard itself.
fn sidecar_members(shard: &str, stamp: Stamp) -> Option<Vec<TarMember>> {
    if crate::store::has_query(shard) {
        return None; // a signed URL's sidecar would need a signature of its own
    }
    let sidecar = sidecar_of(shard);
    let bytes = match crate::store::read(&sidecar) {
        Ok(bytes) => bytes,
        Err(StoreError::NotFound { .. }) => {
            // Said once: a stream waits for every such shard to be fetched before its first
            // batch, which looks like a hang on a large dataset without this line.
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                log::warn!(
                    "{shard}: no index sidecar ({sidecar}); remote shards without one are \
                     fetched whole to count their samples before the first stream on this \
                     machine starts (their indexes are then kept, see {}). \
                     `audiodecode shard --index TAR...` writes the sidecars once",
                    crate::store::learnt::INDEX_CACHE_ENV
                );
            });
            return None;
        }
        Err(e) => {
            log::warn!("{e}; fetching the shard to index it");
            return None;
        }
    };
    let parsed: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            log::warn!("{sidecar}: not a shard index ({e}); fetching the shard to index it");
            return None;
        }
    };
    if parsed["format"] != SIDECAR_FORMAT || parsed["size"].as_u64() != Some(stamp.size) {
        log::warn!("{sidecar}: made for another version of the shard; fetching the shard");
        return None;
    }
    listed_members(&parsed, stamp.size)
}

/// Bytes of `member` of a shard read by ranged GETs, with its tar header, from blocks of
/// the shard; the header must be a valid tar header stating the member's size.
fn ranged_member(index: &ShardIndex, member: &TarMember) -> Result<Vec<u8>, StoreError> {
    let start = member.offset - 512;
    let range = start..member.offset + member.size;
    let mut bytes = crate::store::blocks::read(&index.shard, index.stamp, range)?;
    let header = tar::Header::from_byte_slice(&bytes[..512]);
    let valid = is_tar_header(&bytes[..512]) && header.size().ok() == Some(member.size);
    if !valid {
        let missing = format!("no header of member {} at byte {start}", member.name);
        let reason = match index.source {
            IndexSource::Sidecar => format!(
                "its index sidecar {} does not match the shard ({missing}); write it again \
                 (audiodecode shard --index)",
                sidecar_of(&index.shard)
            ),
            IndexSource::Learnt => {
                // A shard rewritten to the same size within its version's resolution (a
                // server's one-second modification time): the index is forgotten and the
                // shard indexed again from its bytes, and the member read through that.
                forget_learnt(&index.shard);
                let fresh = self::index(&index.shard)?;
                if fresh.source != IndexSource::Learnt {
                    if let Some(entry) = fresh.member(&member.name).cloned() {
                        return read_member(&fresh, &entry);
                    }
                }
                format!("the index learnt from it earlier does not match it ({missing})")
            }
            IndexSource::Streamed | IndexSource::Archive => {
                format!("the shard changed while it was being read ({missing})")
            }
        };
        return Err(StoreError::Invalid {
            url: index.shard.clone(),
            reason,
        });
    }
    bytes.drain(..512);
    Ok(bytes)
}

/// A tar header's checksum as it should be: the sum of its bytes with the checksum field
/// taken as spaces.
fn header_checksum(header: &[u8]) -> u32 {
    header
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                u32::from(b' ')
            } else {
                u32::from(b)
            }
        })
        .sum()
}

/// The index as last built, without asking the store whether the shard changed (a stream
/// checked when it opened); built now if there is none.
fn trusted_index(shard: &str) -> Result<Arc<ShardIndex>, StoreError> {
    // The lock is let go before `index` takes it again (a guard in the `match` scrutinee
    // would live through the arms: a deadlock on the first read of a shard not indexed).
    let kept = lock().get(shard).cloned();
    match kept {
        Some(index) => Ok(index),
        None => index(shard),
    }
}

/// The stamp of the shard's version its members are read from: the version indexed, or
/// the shard indexed now (a Shar or NeMo stream opens without reading its tars; the
/// member's read indexes it next anyway). `None` when the shard cannot be read.
pub fn trusted_stamp(shard: &str) -> Option<Stamp> {
    remembered(shard, || trusted_index(shard))
        .ok()
        .map(|i| i.stamp)
}

fn current_stamp(shard: &str) -> Result<Stamp, StoreError> {
    match crate::store::url_of(Path::new(shard)) {
        Some(url) => crate::store::stamp(url),
        None => local_stamp(shard),
    }
}

fn local_stamp(shard: &str) -> Result<Stamp, StoreError> {
    let meta = std::fs::metadata(shard).map_err(|e| local_error(shard, &e))?;
    Ok(file_stamp(&meta))
}

pub(super) fn file_stamp(meta: &std::fs::Metadata) -> Stamp {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    meta.modified().ok().hash(&mut hasher);
    Stamp {
        size: meta.len(),
        tag: hasher.finish(),
    }
}

fn local_error(shard: &str, err: &std::io::Error) -> StoreError {
    if err.kind() == std::io::ErrorKind::NotFound {
        StoreError::NotFound {
            url: shard.to_string(),
        }
    } else {
        StoreError::Unreachable {
            url: shard.to_string(),
            reason: err.to_string(),
        }
    }
}

/// The shard opened for reading, its version, and the local copy that keeps a remote
/// shard's bytes alive while it is read. A remote shard is read from the copy held unless
/// that is not the `expected` version (just learnt from the store): then it is fetched.
fn open_shard(
    shard: &str,
    expected: Option<Stamp>,
) -> Result<(File, Stamp, Option<crate::store::LocalCopy>), StoreError> {
    if is_compressed(shard) {
        let (copy, stamp) = crate::store::inflate::inflated_copy(shard, expected)?;
        let file = File::open(copy.path()).map_err(|e| StoreError::Local {
            url: shard.to_string(),
            reason: format!("cannot open the inflated copy: {e}"),
        })?;
        return Ok((file, stamp, Some(copy)));
    }
    match crate::store::url_of(Path::new(shard)) {
        Some(url) => {
            let (copy, stamp) = match crate::store::held_copy(url)? {
                (_, held) if expected.is_some_and(|e| e != held) => {
                    crate::store::current_copy(url)?
                }
                held => held,
            };
            let file = File::open(copy.path()).map_err(|e| StoreError::Unreachable {
                url: url.to_string(),
                reason: format!("cannot open the fetched copy: {e}"),
            })?;
            Ok((file, stamp, Some(copy)))
        }
        None => {
            let file = crate::sys::open_regular_file(Path::new(shard))
                .map_err(|e| local_error(shard, &e))?;
            let meta = file.metadata().map_err(|e| local_error(shard, &e))?;
            Ok((file, file_stamp(&meta), None))
        }
    }
}

fn build(shard: &str, file: File, stamp: Stamp) -> Result<Arc<ShardIndex>, StoreError> {
    readable(shard, stamp, read_members(file), IndexSource::Archive)
}

/// Keeps (and returns) the index of `shard`'s version `stamp`.
fn keep(
    shard: &str,
    stamp: Stamp,
    members: Vec<TarMember>,
    damage: Option<String>,
    source: IndexSource,
) -> Arc<ShardIndex> {
    let by_name = members
        .iter()
        .enumerate()
        .map(|(i, m)| (m.name.clone(), i))
        .collect();
    let index = Arc::new(ShardIndex {
        shard: shard.to_string(),
        stamp,
        members,
        by_name,
        damage,
        source,
    });
    let mut indexes = lock();
    if indexes.len() >= INDEXES_KEPT {
        indexes.clear();
    }
    indexes.insert(shard.to_string(), Arc::clone(&index));
    index
}

/// Regular files of the archive in order (through the `tar` crate: GNU long names and pax
/// headers), and the error that stopped the reading, if one did. Archives joined end to end
/// are read on (Note [Joined tar archives]).
fn read_members(file: File) -> MembersRead {
    let mut all = Vec::new();
    let mut base = 0;
    loop {
        if let Err(e) = (&file).seek(SeekFrom::Start(base)) {
            return (all, Some(e.to_string()));
        }
        let (members, damage) = {
            let mut archive = tar::Archive::new(FromOffset { file: &file, base });
            match archive.entries_with_seek() {
                Ok(entries) => members_of(entries),
                Err(e) => (Vec::new(), Some(e.to_string())),
            }
        };
        all.extend(members.into_iter().map(|m| m.moved_by(base)));
        if damage.is_some() {
            return (all, damage);
        }
        // The archive's reader stopped just past its first end block.
        let stopped = match (&file).stream_position() {
            Ok(at) => at,
            Err(e) => return (all, Some(e.to_string())),
        };
        match next_archive(&mut &file, stopped) {
            Some((at, _header)) => base = at,
            None => return (all, None),
        }
    }
}

/// The file from `base` on, as the tar reader sees an archive: positions count from there.
struct FromOffset<'a> {
    file: &'a File,
    base: u64,
}

impl Read for FromOffset<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf)
    }
}

impl Seek for FromOffset<'_> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        let pos = match pos {
            SeekFrom::Start(at) => SeekFrom::Start(self.base + at),
            relative => relative,
        };
        Ok(self.file.seek(pos)?.saturating_sub(self.base))
    }
}

/// Note [Joined tar archives]: `cat a.tar b.tar > c.tar` leaves a's end blocks in the middle
/// of c. `tar` stops there (GNU tar without `-i`, Python's tarfile and so WebDataset), and
/// every member of b was lost without a word. After an archive's end, the blocks that follow
/// are read on: zero blocks are skipped, and a valid tar header starts the next archive. Any
/// other bytes there are not members (junk after the end, which tar ignores too): a warning
/// says how many, and nothing is lost that was a member.
///
/// Reads 512-byte blocks from `reader`, positioned at `at` (just past an end block): the
/// position and bytes of the next archive's first header, or `None` at the end of the file.
fn next_archive<R: Read>(reader: &mut R, mut at: u64) -> Option<(u64, [u8; 512])> {
    let mut block = [0u8; 512];
    loop {
        let mut filled = 0;
        while filled < block.len() {
            match reader.read(&mut block[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        if filled == 0 {
            return None;
        }
        if block[..filled].iter().all(|&b| b == 0) {
            at += filled as u64;
            continue;
        }
        if filled == block.len() && is_tar_header(&block) {
            return Some((at, block));
        }
        log::warn!("bytes from {at} on follow the tar archive's end and are not members; ignored");
        return None;
    }
}

/// Whether `block` is a tar header: its checksum matches.
fn is_tar_header(block: &[u8]) -> bool {
    tar::Header::from_byte_slice(block).cksum().ok() == Some(header_checksum(block))
}

/// The members read from an archive, and the error that stopped the reading, if one did.
type MembersRead = (Vec<TarMember>, Option<String>);

fn members_of<R: Read>(entries: tar::Entries<R>) -> MembersRead {
    let mut members = Vec::new();
    for entry in entries {
        let mut entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                let at = members.last().map_or(0, |m: &TarMember| m.offset + m.size);
                return (members, Some(format!("damaged after byte {at}: {e}")));
            }
        };
        let Ok(name) = entry.path().map(|p| p.to_string_lossy().into_owned()) else {
            continue;
        };
        let kind = entry.header().entry_type();
        if kind.is_gnu_sparse() || (kind.is_file() && sparse_name(&mut entry).is_some()) {
            // Note [Sparse tar members]: a member the reading fails for, with the reason,
            // under the file's own name (pax sparse 1.0 stores `GNUSparseFile.N/NAME`).
            let name = sparse_name(&mut entry).flatten().unwrap_or(name);
            members.push(TarMember {
                name,
                offset: entry.raw_file_position(),
                size: entry.header().entry_size().unwrap_or(0),
                sparse: true,
            });
        } else if kind.is_file() {
            members.push(TarMember {
                name,
                offset: entry.raw_file_position(),
                size: entry.size(),
                sparse: false,
            });
        } else if kind.is_hard_link() || kind.is_symlink() {
            // `tar` stores a file met twice (a hard link, or `tar -h` off) once, later names
            // pointing at the first: the link is a member with the target's bytes.
            let target = entry
                .link_name()
                .ok()
                .flatten()
                .map(|t| link_target(&name, &t.to_string_lossy(), kind.is_symlink()));
            match target.and_then(|t| members.iter().find(|m: &&TarMember| m.name == t)) {
                Some(target) => members.push(TarMember {
                    name,
                    ..target.clone()
                }),
                None => log::warn!("{name}: a link to a file outside the archive; skipped"),
            }
        }
    }
    (members, None)
}

/// For a member stored in pax sparse format (`GNU.sparse.*` keys), `Some` with the file's
/// own name when the keys give it; `None` for any other member.
fn sparse_name<R: Read>(entry: &mut tar::Entry<'_, R>) -> Option<Option<String>> {
    let extensions = entry.pax_extensions().ok()??;
    let mut sparse = None;
    for extension in extensions.flatten() {
        let Ok(key) = extension.key() else { continue };
        if key == "GNU.sparse.name" {
            return Some(extension.value().ok().map(str::to_string));
        }
        if key.starts_with("GNU.sparse.") {
            sparse = Some(None);
        }
    }
    sparse
}

/// Note [Sparse tar members]: GNU tar `--sparse` (and libarchive, for files with holes)
/// stores a file as a map and its data without the holes. Read as the member's bytes that
/// is not the file: the old GNU type was skipped without a word and the pax format (a
/// regular member named `GNUSparseFile.N/NAME`) decoded as wrong audio under a wrong key.
/// Such a member is listed under its own name and reading it fails, naming the reason.
fn refuse_sparse(shard: &str, member: &TarMember) -> Result<(), StoreError> {
    if !member.sparse {
        return Ok(());
    }
    Err(StoreError::Invalid {
        url: shard.to_string(),
        reason: format!(
            "member {} is stored as a sparse file (tar --sparse, or a file with holes), \
             which is not read: write the shard without --sparse",
            member.name
        ),
    })
}

/// The member name a link at `name` points to: a hard link's target is named from the
/// archive's root, a symbolic link's relative to the link's directory.
fn link_target(name: &str, target: &str, symbolic: bool) -> String {
    let dir = match name.rfind('/') {
        Some(slash) if symbolic && !target.starts_with('/') => &name[..slash],
        _ => "",
    };
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in target.trim_start_matches('/').split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    parts.join("/")
}

/// The bytes of `member` of `shard` (small members: labels, transcripts, metadata).
pub fn read_member(index: &ShardIndex, member: &TarMember) -> Result<Vec<u8>, StoreError> {
    refuse_sparse(&index.shard, member)?;
    if index.ranged() {
        return ranged_member(index, member);
    }
    let (mut file, stamp, _copy) = open_shard(&index.shard, None)?;
    if stamp != index.stamp {
        return Err(changed(&index.shard));
    }
    let mut bytes = vec![0; usize::try_from(member.size).unwrap_or(usize::MAX)];
    file.seek(SeekFrom::Start(member.offset))
        .and_then(|_| file.read_exact(&mut bytes))
        .map_err(|e| StoreError::Unreachable {
            url: index.shard.clone(),
            reason: format!("cannot read member {}: {e}", member.name),
        })?;
    Ok(bytes)
}

fn changed(shard: &str) -> StoreError {
    StoreError::Unreachable {
        url: shard.to_string(),
        reason: "the shard changed while it was being read".into(),
    }
}

/// Copy `SHARD#MEMBER` into a memory file for the decoders; errors name the member path.
pub fn member_copy(path: &Path, shard: &str, member: &str) -> Result<MemFile, DecodeError> {
    let renamed = |e: StoreError| match e {
        StoreError::NotFound { .. } => DecodeError::NotFound { path: path.into() },
        StoreError::Invalid { reason, .. } => DecodeError::Unsupported {
            path: path.into(),
            reason,
        },
        other => DecodeError::Io {
            path: path.into(),
            source: std::io::Error::other(other.to_string()),
        },
    };
    let mut index = remembered(shard, || trusted_index(shard)).map_err(renamed)?;
    if index.ranged() {
        let Some(entry) = index.member(member).cloned() else {
            return Err(missing_member(path, &index));
        };
        refuse_sparse(shard, &entry).map_err(renamed)?;
        let bytes = remembered(shard, || ranged_member(&index, &entry)).map_err(renamed)?;
        let mut copy =
            MemFile::new(&format!("member:{member}")).map_err(|e| DecodeError::open(path, e))?;
        copy.write_all(&bytes)
            .and_then(|()| copy.flush())
            .map_err(|e| DecodeError::open(path, e))?;
        return Ok(copy);
    }
    let (mut file, stamp, _copy) =
        remembered(shard, || open_shard(shard, None)).map_err(renamed)?;
    if stamp != index.stamp {
        index = build(
            shard,
            file.try_clone().map_err(|e| DecodeError::open(path, e))?,
            stamp,
        )
        .map_err(renamed)?;
    }
    let Some(entry) = index.member(member).cloned() else {
        return Err(missing_member(path, &index));
    };
    refuse_sparse(shard, &entry).map_err(renamed)?;
    let mut copy =
        MemFile::new(&format!("member:{member}")).map_err(|e| DecodeError::open(path, e))?;
    file.seek(SeekFrom::Start(entry.offset))
        .map_err(|e| DecodeError::open(path, e))?;
    let copied = std::io::copy(&mut (&mut file).take(entry.size), &mut copy)
        .map_err(|e| DecodeError::open(path, e))?;
    if copied != entry.size {
        return Err(DecodeError::Truncated {
            path: path.into(),
            decoded_seconds: 0.0,
            declared_seconds: None,
        });
    }
    copy.flush().map_err(|e| DecodeError::open(path, e))?;
    Ok(copy)
}

/// The error for a member the shard's index does not list.
fn missing_member(path: &Path, index: &ShardIndex) -> DecodeError {
    let reason = match &index.damage {
        Some(damage) => format!("not in the shard, whose archive is {damage}"),
        None => "no such member in the shard".to_string(),
    };
    DecodeError::Corrupt {
        path: path.into(),
        at_seconds: 0.0,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard_with(members: &[(&str, &[u8])]) -> tempfile::NamedTempFile {
        let file = tempfile::Builder::new().suffix(".tar").tempfile().unwrap();
        let mut builder = tar::Builder::new(file.reopen().unwrap());
        for (name, data) in members {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, *data).unwrap();
        }
        builder.finish().unwrap();
        file
    }

    #[test]
    fn links_are_members_with_their_targets_bytes() {
        let file = tempfile::Builder::new().suffix(".tar").tempfile().unwrap();
        let mut builder = tar::Builder::new(file.reopen().unwrap());
        let mut header = tar::Header::new_gnu();
        header.set_size(5);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, "d/a.wav", &b"audio"[..])
            .unwrap();
        for (kind, name, target) in [
            (tar::EntryType::Link, "d/b.wav", "d/a.wav"),
            (tar::EntryType::Symlink, "d/c.wav", "a.wav"),
            (tar::EntryType::Symlink, "e/d.wav", "../d/a.wav"),
            (tar::EntryType::Link, "d/gone.wav", "elsewhere.wav"),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(kind);
            header.set_size(0);
            builder.append_link(&mut header, name, target).unwrap();
        }
        builder.finish().unwrap();
        let (members, damage) = read_members(std::fs::File::open(file.path()).unwrap());
        assert!(damage.is_none());
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["d/a.wav", "d/b.wav", "d/c.wav", "e/d.wav"]);
        assert!(members
            .iter()
            .all(|m| m.offset == members[0].offset && m.size == 5));
    }

    /// Note [Joined tar archives]: the members of archives joined end to end, read from the
    /// file and as a stream, each member's data where its offset says.
    #[test]
    fn archives_joined_end_to_end_are_read_on_and_junk_after_the_end_is_not() {
        let first = shard_with(&[("a.wav", b"first"), ("a.txt", b"one")]);
        let second = shard_with(&[("b.wav", b"second!"), ("b.txt", b"two")]);
        let mut joined = std::fs::read(first.path()).unwrap();
        // GNU tar pads an archive to 10240-byte records with zeros.
        joined.resize(joined.len().div_ceil(10240) * 10240, 0);
        joined.extend(std::fs::read(second.path()).unwrap());
        let with_junk = [joined.clone(), b"not a tar header, just text".repeat(40)].concat();
        for bytes in [&joined, &with_junk] {
            let file = tempfile::tempfile().unwrap();
            (&file).write_all(bytes).unwrap();
            let read = read_members(file);
            let streamed = streamed_archives(&mut Counted {
                inner: std::io::Cursor::new(bytes.clone()),
                count: 0,
            });
            assert_eq!(read, streamed);
            let (members, damage) = read;
            assert!(damage.is_none());
            let found: Vec<(&str, &[u8])> = members
                .iter()
                .map(|m| {
                    let at = m.offset as usize;
                    (m.name.as_str(), &bytes[at..at + m.size as usize])
                })
                .collect();
            assert_eq!(
                found,
                [
                    ("a.wav", &b"first"[..]),
                    ("a.txt", b"one"),
                    ("b.wav", b"second!"),
                    ("b.txt", b"two")
                ]
            );
        }
        // Damage inside the second archive is still damage.
        let mut damaged = joined.clone();
        let second_at = joined.len() - std::fs::metadata(second.path()).unwrap().len() as usize;
        damaged[second_at + 1024 + 100] ^= 0xff; // the second member's header
        let file = tempfile::tempfile().unwrap();
        (&file).write_all(&damaged).unwrap();
        let (members, damage) = read_members(file);
        assert_eq!(members.len(), 3);
        assert!(damage.is_some_and(|d| d.contains("checksum")));
    }

    #[test]
    fn indexes_keep_which_members_are_sparse() {
        let member = |name: &str, sparse| TarMember {
            name: name.into(),
            offset: 512,
            size: 10,
            sparse,
        };
        let members = [member("a.wav", false), member("b.wav", true)];
        let listed = listed_members(&index_json(2048, &members), 2048);
        assert_eq!(listed.as_deref(), Some(&members[..]));
        let refused = refuse_sparse("s.tar", &members[1]).unwrap_err().to_string();
        assert!(
            refused.contains("b.wav") && refused.contains("sparse"),
            "{refused}"
        );
        assert!(refuse_sparse("s.tar", &members[0]).is_ok());
    }

    #[test]
    fn a_failed_shard_is_not_read_again_in_its_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let shard = dir.path().join("late.tar").to_string_lossy().into_owned();
        let epoch = Arc::new(ShardFailures::default());
        let first = ShardFailures::within(&epoch, || index(&shard));
        assert!(matches!(first, Err(StoreError::NotFound { .. })));
        // The shard appears: this epoch keeps its failure, a member's read included, ...
        let file = shard_with(&[("a.wav", b"0123456789")]);
        std::fs::copy(file.path(), &shard).unwrap();
        let again = ShardFailures::within(&epoch, || index(&shard));
        assert!(matches!(again, Err(StoreError::NotFound { .. })));
        let member = format!("{shard}#a.wav");
        let copy = ShardFailures::within(&epoch, || {
            member_copy(Path::new(&member), &shard, "a.wav").map(|_| ())
        });
        assert!(matches!(copy, Err(DecodeError::NotFound { .. })));
        assert!(
            ShardFailures::current().is_none(),
            "the scope ends with its work"
        );
        // ... and the next epoch, or a read outside any stream, finds it.
        let next = Arc::new(ShardFailures::default());
        assert!(ShardFailures::within(&next, || index(&shard)).is_ok());
        assert!(member_copy(Path::new(&member), &shard, "a.wav").is_ok());
    }

    #[test]
    fn header_checksums_are_computed_as_tar_writes_them() {
        let mut header = tar::Header::new_ustar();
        header.set_path("utt0001.flac").unwrap();
        header.set_size(12345);
        header.set_mode(0o644);
        header.set_cksum();
        assert_eq!(header.cksum().unwrap(), header_checksum(header.as_bytes()));
    }

    #[test]
    fn sidecars_list_every_member_where_the_archive_has_it() {
        let shard = shard_with(&[("a.wav", b"0123456789"), ("a.txt", b"hello")]);
        write_sidecar(&shard.path().to_string_lossy()).unwrap();
        let sidecar = sidecar_of(&shard.path().to_string_lossy());
        let parsed: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&sidecar).unwrap()).unwrap();
        let size = std::fs::metadata(shard.path()).unwrap().len();
        assert_eq!(parsed["size"].as_u64(), Some(size));
        let (members, _) = read_members(std::fs::File::open(shard.path()).unwrap());
        let listed: Vec<(String, u64, u64)> = parsed["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m[0].as_str().unwrap().to_string(),
                    m[1].as_u64().unwrap(),
                    m[2].as_u64().unwrap(),
                )
            })
            .collect();
        let expected: Vec<(String, u64, u64)> = members
            .iter()
            .map(|m| (m.name.clone(), m.offset, m.size))
            .collect();
        assert_eq!(listed, expected);
        std::fs::remove_file(&sidecar).unwrap();
        // The sidecars' directory, when no other test's sidecar is in it.
        let _ = std::fs::remove_dir(Path::new(&sidecar).parent().unwrap());
    }

    #[test]
    fn a_learnt_index_is_kept_for_its_shard_and_version_only() {
        let dir = tempfile::tempdir().unwrap();
        // Only this test sets the variable; other tests index local shards, which never
        // read it.
        std::env::set_var(crate::store::learnt::INDEX_CACHE_ENV, dir.path());
        let file = shard_with(&[("a.wav", b"0123456789"), ("a.txt", b"hello")]);
        let (members, damage) = read_members(std::fs::File::open(file.path()).unwrap());
        assert!(damage.is_none());
        let url = "http://127.0.0.1:9/data/train-000000.tar";
        let stamp = Stamp { size: 3072, tag: 7 };
        assert_eq!(learnt_members(url, stamp), None, "nothing kept yet");
        keep_learnt(&keep(
            url,
            stamp,
            members.clone(),
            None,
            IndexSource::Archive,
        ));
        assert_eq!(learnt_members(url, stamp), Some(members.clone()));
        // Another version of the shard, or another shard, has no index yet.
        assert_eq!(learnt_members(url, Stamp { tag: 8, ..stamp }), None);
        assert_eq!(
            learnt_members(
                url,
                Stamp {
                    size: 4096,
                    ..stamp
                }
            ),
            None
        );
        assert_eq!(
            learnt_members(&url.replace("000000", "000001"), stamp),
            None
        );
        // The file names the shard it was learnt from: a file under another shard's name
        // (a hash collision) is not taken for that shard's index.
        let other = url.replace("000000", "000002");
        let copied = std::fs::copy(
            crate::store::learnt::path_of(url).unwrap(),
            crate::store::learnt::path_of(&other).unwrap(),
        );
        assert!(copied.is_ok());
        assert_eq!(learnt_members(&other, stamp), None);
        // An empty setting keeps nothing.
        std::env::set_var(crate::store::learnt::INDEX_CACHE_ENV, "");
        assert_eq!(crate::store::learnt::path_of(url), None);
        assert_eq!(learnt_members(url, stamp), None);
        std::env::remove_var(crate::store::learnt::INDEX_CACHE_ENV);
    }

    #[test]
    fn member_paths_split_at_the_last_tar() {
        assert_eq!(
            split_member("s3://b/x.tar.d/s-0.tar#a.b.flac"),
            Some(("s3://b/x.tar.d/s-0.tar", "a.b.flac"))
        );
        assert_eq!(split_member("/data/a#b.wav"), None);
        assert_eq!(
            split_member("https://h/s-0.tar?sig=a%2Fb&e=1#k/a.flac"),
            Some(("https://h/s-0.tar?sig=a%2Fb&e=1", "k/a.flac"))
        );
        assert_eq!(split_member("https://h/a.wav?x=1#y"), None);
    }

    #[test]
    fn members_are_indexed_and_copied() {
        let long_name = format!("{}/clip.flac", "d".repeat(120));
        let shard = shard_with(&[("a.txt", b"hello"), (&long_name, b"0123456789")]);
        let shard_path = shard.path().to_string_lossy().into_owned();
        let index = index(&shard_path).unwrap();
        assert_eq!(index.members.len(), 2);
        assert!(index.damage.is_none());
        let text = read_member(&index, index.member("a.txt").unwrap()).unwrap();
        assert_eq!(text, b"hello");
        let member = member_path(&shard_path, &long_name);
        let mut copy = member_copy(Path::new(&member), &shard_path, &long_name).unwrap();
        let mut back = Vec::new();
        copy.seek(SeekFrom::Start(0)).unwrap();
        copy.read_to_end(&mut back).unwrap();
        assert_eq!(back, b"0123456789");
        let missing = member_copy(Path::new("x"), &shard_path, "nope.flac").unwrap_err();
        assert!(missing.to_string().contains("no such member"), "{missing}");
    }

    #[test]
    fn a_damaged_archive_keeps_the_members_before_the_damage() {
        let shard = shard_with(&[("a.flac", &[1u8; 600]), ("b.flac", &[2u8; 600])]);
        let mut bytes = std::fs::read(shard.path()).unwrap();
        // Scribble over the second header (its checksum no longer matches).
        let second = 512 + 1024;
        bytes[second..second + 100].fill(0x41);
        std::fs::write(shard.path(), &bytes).unwrap();
        let index = index(&shard.path().to_string_lossy()).unwrap();
        assert_eq!(index.members.len(), 1);
        assert!(
            index.damage.as_deref().unwrap().contains("damaged"),
            "{:?}",
            index.damage
        );
    }
}
