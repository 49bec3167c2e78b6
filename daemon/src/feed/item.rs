//! One dataset item as a stream delivers it: decoded (or taken from the cache), cropped,
//! augmented and capped at the slot length.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use audiodecode_protocol::{CropMode, ItemInfo, StreamSpec};

use crate::decode::integrity;
use crate::decode::resample::Quality;
use crate::decode::{load, DecodedAudio, LoadRequest};
use crate::decode::{probe_info, ChannelMode};
use crate::error::DecodeError;
use crate::feed::augment::{AugmentError, ClipSource, Step};
use crate::feed::cache::{AudioCache, CacheKey, FileFacts, FileStamp};
use crate::feed::sampler::SplitMix64;
use crate::feed::wire::quality_of;

/// The part of a file that is the item: from `offset` seconds, `duration` long (to the
/// end when `None`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ItemRange {
    pub offset: f64,
    pub duration: Option<f64>,
}

impl ItemRange {
    /// (start, length) in frames at `rate`, within audio of `frames` frames.
    fn frames(self, rate: u32, frames: u64) -> (u64, u64) {
        let at = |s: f64| ((s.max(0.0) * f64::from(rate)).round() as u64).min(frames);
        let start = at(self.offset);
        let len = self
            .duration
            .map_or(frames - start, |d| at(d).min(frames - start));
        (start, len)
    }
}

/// One item's samples for a batch: a frame range of decoded audio, which may be shared
/// with the cache (cropping is a range, not a copy).
#[derive(Clone)]
pub struct ItemAudio {
    audio: Arc<DecodedAudio>,
    start: usize,
    len: usize,
    /// Why the item was cut to its slot, when it was (Note [Items longer than declared]).
    cut: Option<Arc<str>>,
}

impl ItemAudio {
    fn new(audio: Arc<DecodedAudio>, start: usize, len: usize, max_frames: u64) -> Self {
        let start = start.min(audio.frames());
        let len = len.min(audio.frames() - start);
        Self {
            audio,
            start,
            len,
            cut: None,
        }
        .within(max_frames)
    }

    /// Cut to the slot's `max_frames` when longer, remembering by how much.
    fn within(mut self, max_frames: u64) -> Self {
        let max = usize::try_from(max_frames).unwrap_or(usize::MAX);
        if self.len > max {
            let sr = f64::from(self.audio.sample_rate.max(1));
            self.cut = Some(Arc::from(format!(
                "cut at {:.3} s of {:.3} s: the batch slots hold the longest duration the \
                 dataset declares, and this item runs longer (correct its stated duration, \
                 or set max_seconds to crop)",
                max as f64 / sr,
                self.len as f64 / sr
            )));
            self.len = max;
        }
        self
    }

    pub fn frames(&self) -> usize {
        self.len
    }

    /// The damage lenient decoding met in the file, when it had some, else why the item
    /// was cut to its slot.
    pub fn damage(&self) -> Option<&str> {
        self.audio.damage.as_deref().or(self.cut.as_deref())
    }

    /// `channels` planes: extra channels dropped, missing ones empty (written as silence).
    pub fn planes(&self, channels: usize) -> Vec<&[f32]> {
        (0..channels)
            .map(|c| {
                self.audio
                    .planes
                    .get(c)
                    .map_or(&[][..], |p| &p[self.start..self.start + self.len])
            })
            .collect()
    }
}

pub type ItemResult = Result<ItemAudio, DecodeError>;

/// Files decoded by stream workers since the daemon started (cache hits decode nothing).
pub static DECODES: AtomicU64 = AtomicU64::new(0);

/// A file much longer than its crop is sliced by seeking rather than decoded whole into the
/// cache: caching an hour to serve four seconds of it would waste the budget.
const CACHE_MAX_SECONDS: f64 = 120.0;

fn decode(path: &Path, req: &LoadRequest) -> Result<DecodedAudio, DecodeError> {
    DECODES.fetch_add(1, Ordering::Relaxed);
    load(path, req, 1)
}

/// Where a crop of `max_s` seconds starts in audio of `total_out` frames.
fn crop_start(spec: &StreamSpec, index: u64, total_out: u64, window: u64) -> u64 {
    if spec.crop == CropMode::Random && total_out > window {
        SplitMix64::for_item(spec.seed, spec.epoch, index).below(total_out - window + 1)
    } else {
        0
    }
}

/// What the daemon remembers across items.
#[derive(Clone, Copy)]
pub struct ItemMemory<'a> {
    /// Decoded files; `None` when the stream does not use the cache.
    pub cache: Option<&'a AudioCache>,
    pub facts: &'a FileFacts,
}

/// Decode one item as the stream asks: rate, channels, crop, capped at the slot length.
/// With the cache on, the whole clean file is cached and cropped in memory. `range` is the
/// part of the file that is the item (a Lhotse cut, a NeMo manifest line's offset and
/// duration); the crop is taken within it. An item that decodes only part of its file is
/// judged by the whole file's damage verdict (Note [Damage rule]).
pub fn decode_item(
    spec: &StreamSpec,
    item: &ItemInfo,
    index: u64,
    range: Option<ItemRange>,
    max_frames: u64,
    memory: ItemMemory<'_>,
    steps: &[Step],
) -> ItemResult {
    let path = Path::new(&item.path);
    let sr = spec.sample_rate;
    let req = LoadRequest {
        sample_rate: Some(sr),
        channels: crate::feed::wire::channel_mode(spec.mono, spec.downmix),
        quality: quality_of(spec.quality),
        lenient: !spec.strict,
        ..LoadRequest::default()
    };
    let window = spec.max_seconds.map(|s| (s * f64::from(sr)).round() as u64);
    // The whole clean file, when it is held or met for the first time; else the item seeks.
    let whole = match memory.cache {
        Some(cache) => cached_audio(cache, memory.facts, path, &req, spec)?,
        None => first_sight(path, &req, spec, memory.facts)?,
    };
    let clean = match whole {
        Some(audio) => {
            let frames = audio.frames() as u64;
            let (start, len) = match range {
                Some(r) => r.frames(sr, frames),
                None => (0, frames),
            };
            match window {
                Some(window) => {
                    let crop = crop_start(spec, index, len, window);
                    let len = window.min(len);
                    ItemAudio::new(audio, (start + crop) as usize, len as usize, max_frames)
                }
                None => ItemAudio::new(audio, start as usize, len as usize, max_frames),
            }
        }
        None => {
            let audio = decode_part(spec, path, req, range, window, index, memory.facts)?;
            ItemAudio::new(Arc::new(audio), 0, usize::MAX, max_frames)
        }
    };
    if let (Some(cut), true) = (&clean.cut, spec.strict) {
        return Err(DecodeError::invalid(path, cut.to_string()));
    }
    if steps.is_empty() {
        return Ok(clean);
    }
    let channels = if spec.mono {
        1
    } else {
        spec.channels.max(1) as usize
    };
    let mut planes: Vec<Vec<f32>> = clean
        .planes(channels)
        .into_iter()
        .map(|p| {
            if p.is_empty() {
                vec![0.0; clean.frames()]
            } else {
                p.to_vec()
            }
        })
        .collect();
    crate::feed::augment::apply(steps, &mut planes, sr, spec.seed, spec.epoch, index)
        .map_err(|e| DecodeError::invalid(path, format!("augmentation failed: {e}")))?;
    let audio = DecodedAudio {
        planes,
        sample_rate: sr,
        damage: clean.damage().map(str::to_string),
    };
    Ok(ItemAudio::new(Arc::new(audio), 0, usize::MAX, max_frames))
}

/// Whether `path` is far longer than the stream's crop: held whole (cached, or decoded
/// whole at first sight) it would waste memory and time on audio no item uses. From the
/// declared duration the stream's open probed (a file it could not probe fails later, in
/// its decode).
fn too_long_to_hold(path: &Path, spec: &StreamSpec, facts: &FileFacts) -> bool {
    let Some(max_s) = spec.max_seconds else {
        return false;
    };
    facts
        .durations
        .get_or_learn(path, || probe_info(path).ok()?.duration)
        .flatten()
        .is_some_and(|d| d > CACHE_MAX_SECONDS.max(4.0 * max_s))
}

/// A file met for the first time without the cache: decoded whole at the stream's rate,
/// as the cache would hold it, so that learning its damage verdict costs no second decode
/// (the item is cropped from it in memory). `None` when the verdict is known (the item
/// seeks), the stream is strict (its verdict comes from `decode_part`), or the file is too
/// long to hold whole.
fn first_sight(
    path: &Path,
    req: &LoadRequest,
    spec: &StreamSpec,
    facts: &FileFacts,
) -> Result<Option<Arc<DecodedAudio>>, DecodeError> {
    // Later epochs: the verdict is known, the item seeks (a stat and a lookup, no probe).
    if !req.lenient || facts.verdicts.get(path).is_some() || too_long_to_hold(path, spec, facts) {
        return Ok(None);
    }
    let mut decoded = None;
    facts.verdicts.get_or_learn(path, || {
        let result = decode(path, req);
        let verdict = result.as_ref().ok().map(|audio| integrity::Integrity {
            frames: audio.frames() as u64,
            sample_rate: audio.sample_rate,
            damage: audio.damage.clone(),
        });
        decoded = Some(result);
        verdict
    });
    decoded.transpose().map(|audio| audio.map(Arc::new))
}

/// The item's part of its file, decoded by seeking (no cache): the range the dataset gives,
/// cropped as the stream asks. Damage is a property of the file, not of the part decoded:
/// a part whose file is damaged elsewhere carries that damage (a strict stream refuses
/// it), and a random crop is placed within the audio that decodes, so an item gets the
/// same decision as from the cache's whole-file decode (Note [Damage rule]).
fn decode_part(
    spec: &StreamSpec,
    path: &Path,
    mut req: LoadRequest,
    range: Option<ItemRange>,
    window: Option<u64>,
    index: u64,
    facts: &FileFacts,
) -> Result<DecodedAudio, DecodeError> {
    let sr = req.sample_rate.unwrap_or(spec.sample_rate);
    if let Some(r) = range {
        req.offset = r.offset;
        req.duration = r.duration;
    }
    // A crop at least as long as the file's stated length decodes the whole file: its own
    // damage is the verdict.
    let declared = || {
        facts
            .durations
            .get_or_learn(path, || probe_info(path).ok()?.duration)
            .flatten()
    };
    let whole = range.is_none()
        && spec
            .max_seconds
            .is_none_or(|max_s| declared().is_some_and(|d| d <= max_s));
    let verdict = if !whole {
        facts
            .verdicts
            .get_or_learn(path, || integrity::check(path, 1).ok())
            .flatten()
    } else {
        None
    };
    let elsewhere = verdict.as_ref().and_then(|v| v.damage.clone());
    if let (Some(damage), false) = (&elsewhere, req.lenient) {
        return Err(DecodeError::Damaged {
            path: path.to_path_buf(),
            damage: damage.clone(),
        });
    }
    if let (Some(max_s), Some(window)) = (spec.max_seconds, window) {
        req.duration = Some(req.duration.map_or(max_s, |d| d.min(max_s)));
        if spec.crop == CropMode::Random {
            // Choose the window within what decodes, then seek: no full decode.
            let total = match (range.and_then(|r| r.duration), &verdict) {
                (Some(d), _) => Some(d),
                (None, Some(v)) => Some(v.seconds() - req.offset),
                (None, None) => declared().map(|d| d - req.offset),
            };
            if let Some(total) = total {
                let total_out = (total.max(0.0) * f64::from(sr)).round() as u64;
                req.offset += crop_start(spec, index, total_out, window) as f64 / f64::from(sr);
            }
        }
    }
    let mut audio = decode(path, &req)?;
    if audio.damage.is_none() {
        audio.damage = elsewhere;
    }
    Ok(audio)
}

/// Noise clips or impulse responses for augmentation: a dataset decoded mono at the
/// stream's rate, through the shared cache.
struct DatasetClips {
    items: Vec<ItemInfo>,
    sample_rate: u32,
    quality: Quality,
    cache: Arc<AudioCache>,
}

impl ClipSource for DatasetClips {
    fn len(&self) -> usize {
        self.items.len()
    }

    fn clip(&self, index: usize) -> Result<Arc<DecodedAudio>, AugmentError> {
        let path = Path::new(&self.items[index].path);
        let req = LoadRequest {
            sample_rate: Some(self.sample_rate),
            channels: ChannelMode::Mono,
            quality: self.quality,
            ..LoadRequest::default()
        };
        let key = CacheKey {
            path: path.to_path_buf(),
            sample_rate: self.sample_rate,
            mode: ChannelMode::Mono,
            quality: self.quality,
            lenient: req.lenient,
        };
        let stamp = FileStamp::of(path);
        if let Some(audio) = stamp.and_then(|s| self.cache.get(&key, s)) {
            return Ok(audio);
        }
        let audio = Arc::new(load(path, &req, 1).map_err(|e| AugmentError::Clip(e.to_string()))?);
        if let Some(stamp) = stamp {
            self.cache.insert(key, stamp, Arc::clone(&audio));
        }
        Ok(audio)
    }
}

/// The stream's augmentation steps, with noise and impulse-response datasets resolved.
pub fn augment_steps(
    spec: &StreamSpec,
    cache: &Arc<AudioCache>,
) -> Result<Vec<Step>, AugmentError> {
    let clips =
        |dataset: &audiodecode_protocol::Dataset| -> Result<Arc<dyn ClipSource>, AugmentError> {
            let resolved = crate::feed::manifest::resolve(dataset)
                .map_err(|e| AugmentError::Clip(e.to_string()))?;
            Ok(Arc::new(DatasetClips {
                items: resolved.items,
                sample_rate: spec.sample_rate,
                quality: quality_of(spec.quality),
                cache: Arc::clone(cache),
            }))
        };
    spec.augment
        .iter()
        .map(|a| Step::from_spec(a, spec.sample_rate, &clips))
        .collect()
}

/// The whole clean file from the cache, decoding and caching it on a miss; `None` when the
/// file should not be cached (far longer than the crop, or unreadable metadata).
fn cached_audio(
    cache: &AudioCache,
    facts: &FileFacts,
    path: &Path,
    req: &LoadRequest,
    spec: &StreamSpec,
) -> Result<Option<Arc<DecodedAudio>>, DecodeError> {
    let Some(stamp) = FileStamp::of(path) else {
        return Ok(None);
    };
    let key = CacheKey {
        path: path.to_path_buf(),
        sample_rate: spec.sample_rate,
        mode: req.channels,
        quality: req.quality,
        lenient: req.lenient,
    };
    if let Some(audio) = cache.get(&key, stamp) {
        return Ok(Some(audio));
    }
    if too_long_to_hold(path, spec, facts) {
        return Ok(None);
    }
    let audio = Arc::new(decode(path, req)?);
    cache.insert(key, stamp, Arc::clone(&audio));
    Ok(Some(audio))
}
