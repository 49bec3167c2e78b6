//! Pure planning of a stream: what the spec allows, which batches the epoch has, how long a
//! slot is and how deep and large the ring is. No I/O: durations come in through a closure,
//! free shared memory as a number.

use crate::decode::limits::{MAX_CHANNELS, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE};
use audiodecode_protocol::ring::{RingGeometry, MAX_SLOTS};
use audiodecode_protocol::{ErrorInfo, StreamSpec};

use crate::feed::augment::Step;
use crate::feed::sampler::{bucketed_batches, epoch_batches, sharded_batches, SamplerSpec};
use crate::feed::tune::{self, MIN_DEPTH};

/// Slot length when neither `max_seconds` nor the files' headers bound it.
pub(super) const DEFAULT_MAX_SECONDS: f64 = 30.0;
/// Depth a stream starts with when the daemon chooses; the tuner moves it.
pub(super) const START_DEPTH: u32 = 4;

/// The batches of one epoch and the longest item (seconds) a slot must hold before stretch.
#[derive(Debug, PartialEq)]
pub(super) struct EpochPlan {
    pub batches: Vec<Vec<u64>>,
    pub longest: f64,
}

/// The ring's layout and the depth the driver starts with.
#[derive(Debug, PartialEq)]
pub(super) struct RingPlan {
    pub geometry: RingGeometry,
    pub depth: u32,
}

/// Refuse a spec the daemon cannot serve, before any file is touched.
pub(super) fn validate(spec: &StreamSpec) -> Result<(), ErrorInfo> {
    if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&spec.sample_rate) {
        return Err(ErrorInfo::bad_request(format!(
            "sample rate {} Hz is outside {MIN_SAMPLE_RATE}..={MAX_SAMPLE_RATE} Hz",
            spec.sample_rate
        )));
    }
    if !spec.mono && spec.channels as usize > MAX_CHANNELS {
        return Err(ErrorInfo::bad_request(format!(
            "{} channels is more than {MAX_CHANNELS}",
            spec.channels
        )));
    }
    if spec.batch_size == 0 {
        return Err(ErrorInfo::bad_request("batch size 0"));
    }
    if spec.world_size == 0 || spec.rank >= spec.world_size {
        return Err(ErrorInfo::bad_request(format!(
            "rank {} of world size {}",
            spec.rank, spec.world_size
        )));
    }
    if !spec.mono && spec.channels == 0 {
        return Err(ErrorInfo::bad_request(
            "channels must be at least 1 when mono is off",
        ));
    }
    if let Some(s) = spec.max_seconds {
        if !(s.is_finite() && s > 0.0) {
            return Err(ErrorInfo::bad_request(format!("max_seconds {s}")));
        }
    }
    if let Some(s) = spec.max_batch_seconds {
        if !(s.is_finite() && s > 0.0) {
            return Err(ErrorInfo::bad_request(format!("max_batch_seconds {s}")));
        }
    }
    if spec.prefetch > MAX_SLOTS {
        return Err(ErrorInfo::bad_request(format!(
            "prefetch {} (a ring has at most {MAX_SLOTS} slots)",
            spec.prefetch
        )));
    }
    Ok(())
}

/// How much longer than its source an item may come out: slowing audio down lengthens it,
/// and slots must hold the longest result.
pub(super) fn stretch(steps: &[Step]) -> f64 {
    1.0 / steps.iter().map(Step::min_speed).fold(1.0, f64::min)
}

/// The sampler's view of the spec, for a dataset of `items` files.
pub(super) fn sampler_spec(spec: &StreamSpec, items: u64) -> SamplerSpec {
    SamplerSpec {
        items,
        batch_size: u64::from(spec.batch_size),
        shuffle: spec.shuffle,
        seed: spec.seed,
        epoch: spec.epoch,
        rank: u64::from(spec.rank),
        world_size: u64::from(spec.world_size),
        drop_last: spec.drop_last,
    }
}

/// Plan the epoch's batches and the longest item. `probe` gives the declared durations of
/// the indices it is passed (`None` where unknown); it is called at most once, and only
/// when lengths are needed: to bucket, or to size slots when nothing else bounds them.
/// `groups` gives each item's shard for a sharded dataset (shard-aware order, unless
/// bucketing).
pub(super) fn epoch(
    spec: &StreamSpec,
    sampler: &SamplerSpec,
    groups: Option<&[u32]>,
    probe: impl FnOnce(&[u64]) -> Vec<Option<f64>>,
) -> EpochPlan {
    match spec.max_batch_seconds {
        Some(budget) => {
            let all: Vec<u64> = (0..sampler.items).collect();
            bucketed(sampler, &probe(&all), budget, spec.max_seconds)
        }
        None => {
            let batches = match groups {
                Some(groups) => sharded_batches(sampler, groups),
                None => epoch_batches(sampler),
            };
            let longest = match spec.max_seconds {
                Some(s) => s,
                None => {
                    let declared = probe(&batches.concat());
                    let known = longest_known(&declared);
                    longest_seconds(known, declared.iter().any(Option::is_none), None)
                }
            };
            EpochPlan { batches, longest }
        }
    }
}

/// Duration-bucketed batches from every item's declared duration (`declared[i]` for item
/// `i`), cropped to `max_seconds`.
fn bucketed(
    sampler: &SamplerSpec,
    declared: &[Option<f64>],
    budget: f64,
    max_seconds: Option<f64>,
) -> EpochPlan {
    let cap = max_seconds.unwrap_or(f64::INFINITY);
    let known = longest_known(declared);
    // Unknown lengths count as the longest known (or the crop) when bucketing.
    let fallback = if known > 0.0 {
        known
    } else {
        DEFAULT_MAX_SECONDS
    };
    let durations: Vec<f64> = declared
        .iter()
        .map(|d| d.unwrap_or(fallback).min(cap))
        .collect();
    let batches = bucketed_batches(sampler, &durations, budget);
    let unknown = declared.iter().any(Option::is_none);
    EpochPlan {
        batches,
        longest: longest_seconds(known.min(cap), unknown, max_seconds),
    }
}

/// The longest declared duration, 0 when none is declared.
fn longest_known(declared: &[Option<f64>]) -> f64 {
    declared.iter().flatten().copied().fold(0.0, f64::max)
}

/// Slot length in seconds: the crop when there is one, else the longest declared item
/// (at least the default when some files do not declare a length).
pub(super) fn longest_seconds(known: f64, unknown: bool, crop: Option<f64>) -> f64 {
    if let Some(c) = crop {
        return c;
    }
    if unknown || known <= 0.0 {
        known.max(DEFAULT_MAX_SECONDS)
    } else {
        known
    }
}

/// Refuse a resume point past the end of the epoch.
pub(super) fn check_start(spec: &StreamSpec, batches: usize) -> Result<(), ErrorInfo> {
    if spec.start_batch > batches as u64 {
        return Err(ErrorInfo::bad_request(format!(
            "start_batch {} past the {} batches of the epoch",
            spec.start_batch, batches
        )));
    }
    Ok(())
}

/// Frames a slot holds per channel: the crop exactly, else the longest item, stretched.
pub(super) fn slot_frames(
    max_seconds: Option<f64>,
    longest: f64,
    stretch: f64,
    sample_rate: u32,
) -> u64 {
    match max_seconds {
        Some(s) => (s * f64::from(sample_rate)).round().max(1.0) as u64,
        // +1: resampling rounds a length up.
        None => (longest * stretch * f64::from(sample_rate)).ceil() as u64 + 1,
    }
}

/// Items a slot holds: the largest batch of the epoch, at least one.
pub(super) fn batch_capacity(batches: &[Vec<u64>]) -> u32 {
    batches.iter().map(Vec::len).max().unwrap_or(1).max(1) as u32
}

/// Slots in the ring and the depth the driver starts with, given the bytes of one slot.
pub(super) fn depth(
    prefetch: u32,
    slot_bytes: u64,
    (plan, streams): (&tune::Plan, usize),
) -> (u32, u32) {
    // The ring has room for the deepest the tuner may go; untouched slots cost no memory.
    // An explicit prefetch fixes the depth.
    if prefetch > 0 {
        (prefetch.max(MIN_DEPTH), prefetch.max(MIN_DEPTH))
    } else {
        let cap = tune::ring_depth(plan, slot_bytes, streams);
        (cap, cap.min(START_DEPTH))
    }
}

/// The ring for `epoch`: slot size from the crop or the longest item, depth from the
/// client's prefetch or the daemon's memory budget shared among `streams`.
pub(super) fn ring(
    spec: &StreamSpec,
    epoch: &EpochPlan,
    stretch: f64,
    budget: (&tune::Plan, usize),
) -> RingPlan {
    let sr = spec.sample_rate;
    let max_frames = slot_frames(spec.max_seconds, epoch.longest, stretch, sr);
    let batch_capacity = batch_capacity(&epoch.batches);
    let channels = if spec.mono { 1 } else { spec.channels };
    let slot_bytes = RingGeometry::new(1, batch_capacity, channels, max_frames, sr).slot_bytes;
    let (slots, depth) = depth(spec.prefetch, slot_bytes, budget);
    RingPlan {
        geometry: RingGeometry::new(slots, batch_capacity, channels, max_frames, sr),
        depth,
    }
}

/// Refuse a ring larger than the free shared memory (`None`: unknown, not checked).
pub(super) fn check_fits(geometry: &RingGeometry, free: Option<u64>) -> Result<(), ErrorInfo> {
    if let Some(free) = free {
        if geometry.total_bytes() > free {
            return Err(ErrorInfo::bad_request(format!(
                "the batch ring needs {} MB but /dev/shm has {} MB free; set max_seconds or \
                 a smaller batch size or prefetch",
                geometry.total_bytes() >> 20,
                free >> 20
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use audiodecode_protocol::{CropMode, Dataset, ErrorKind, OnError, Quality};
    use std::cell::Cell;

    fn spec() -> StreamSpec {
        StreamSpec {
            dataset: Dataset::Files {
                paths: vec![],
                labels: None,
            },
            sample_rate: 16000,
            mono: true,
            channels: 1,
            batch_size: 4,
            max_seconds: None,
            crop: CropMode::Start,
            pad_to_max: false,
            shuffle: false,
            seed: 7,
            epoch: 0,
            start_batch: 0,
            rank: 0,
            world_size: 1,
            drop_last: false,
            on_error: OnError::Skip,
            quality: Quality::Hq,
            prefetch: 0,
            cache: false,
            max_batch_seconds: None,
            augment: vec![],
            strict: false,
            downmix: audiodecode_protocol::Downmix::Mean,
        }
    }

    fn budget(ring_budget: u64) -> tune::Plan {
        tune::Plan {
            workers: 1,
            min_workers: 1,
            max_workers: 1,
            cache_bytes: 0,
            ring_budget,
            gpus: vec![],
        }
    }

    fn refused(spec: &StreamSpec) -> String {
        let err = validate(spec).expect_err("spec should be refused");
        assert_eq!(err.kind, ErrorKind::BadRequest);
        err.message
    }

    #[test]
    fn validate_accepts_a_plain_spec() {
        assert!(validate(&spec()).is_ok());
        let full = StreamSpec {
            mono: false,
            channels: 2,
            max_seconds: Some(1.5),
            max_batch_seconds: Some(20.0),
            prefetch: MAX_SLOTS,
            rank: 3,
            world_size: 4,
            sample_rate: 768_000,
            ..spec()
        };
        assert!(validate(&full).is_ok());
    }

    #[test]
    fn validate_refuses_each_bad_field() {
        let s = spec();
        assert!(refused(&StreamSpec {
            sample_rate: 0,
            ..s.clone()
        })
        .contains("sample rate 0"));
        assert!(refused(&StreamSpec {
            sample_rate: 768_001,
            ..s.clone()
        })
        .contains("768001"));
        assert_eq!(
            refused(&StreamSpec {
                batch_size: 0,
                ..s.clone()
            }),
            "batch size 0"
        );
        assert!(refused(&StreamSpec {
            world_size: 0,
            ..s.clone()
        })
        .contains("world size 0"));
        assert_eq!(
            refused(&StreamSpec {
                rank: 2,
                world_size: 2,
                ..s.clone()
            }),
            "rank 2 of world size 2"
        );
        assert!(refused(&StreamSpec {
            mono: false,
            channels: 0,
            ..s.clone()
        })
        .contains("channels"));
        // Mono ignores the channel count.
        assert!(validate(&StreamSpec {
            mono: true,
            channels: 0,
            ..s.clone()
        })
        .is_ok());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            refused(&StreamSpec {
                max_seconds: Some(bad),
                ..s.clone()
            });
            refused(&StreamSpec {
                max_batch_seconds: Some(bad),
                ..s.clone()
            });
        }
        let msg = refused(&StreamSpec {
            prefetch: MAX_SLOTS + 1,
            ..s.clone()
        });
        assert!(msg.contains(&format!("at most {MAX_SLOTS} slots")), "{msg}");
    }

    #[test]
    fn longest_seconds_prefers_the_crop_then_the_headers() {
        assert_eq!(longest_seconds(12.0, true, Some(3.0)), 3.0);
        assert_eq!(longest_seconds(12.0, false, None), 12.0);
        // A file without a declared length may be longer than any known one.
        assert_eq!(longest_seconds(12.0, true, None), DEFAULT_MAX_SECONDS);
        assert_eq!(longest_seconds(45.0, true, None), 45.0);
        assert_eq!(longest_seconds(0.0, false, None), DEFAULT_MAX_SECONDS);
    }

    #[test]
    fn slot_frames_from_crop_or_longest() {
        // The crop is exact, whatever the items' lengths or stretch.
        assert_eq!(slot_frames(Some(2.0), 99.0, 2.0, 16000), 32000);
        assert_eq!(slot_frames(Some(1e-9), 0.0, 1.0, 16000), 1);
        // Otherwise the longest item, stretched, rounded up, plus one for resampling.
        assert_eq!(slot_frames(None, 2.0, 1.0, 16000), 32001);
        assert_eq!(slot_frames(None, 2.0, 1.25, 16000), 40001);
        assert_eq!(slot_frames(None, 1.00001, 1.0, 16000), 16002);
    }

    #[test]
    fn stretch_follows_the_slowest_speed() {
        assert_eq!(stretch(&[]), 1.0);
        let gain = Step::Gain {
            min_db: -6.0,
            max_db: 6.0,
            p: 1.0,
        };
        assert_eq!(stretch(std::slice::from_ref(&gain)), 1.0);
        let speeds = [
            gain,
            Step::Speed {
                factors: vec![0.9, 1.1],
                p: 0.5,
            },
            Step::Speed {
                factors: vec![0.8],
                p: 0.5,
            },
        ];
        assert_eq!(stretch(&speeds), 1.25);
        // Only speeding up never shortens a slot below the source.
        let faster = Step::Speed {
            factors: vec![1.5],
            p: 1.0,
        };
        assert_eq!(stretch(&[faster]), 1.0);
    }

    #[test]
    fn epoch_without_bucketing_probes_only_without_a_crop() {
        let sampler = sampler_spec(&spec(), 10);
        let cropped = StreamSpec {
            max_seconds: Some(5.0),
            ..spec()
        };
        let plan = epoch(&cropped, &sampler, None, |_| {
            panic!("no probe needed with a crop")
        });
        assert_eq!(plan.longest, 5.0);
        assert_eq!(
            plan.batches,
            vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]
        );

        let asked = Cell::new(0);
        let plan = epoch(&spec(), &sampler, None, |indices| {
            asked.set(indices.len());
            indices.iter().map(|&i| Some(i as f64)).collect()
        });
        assert_eq!(asked.get(), 10);
        assert_eq!(plan.longest, 9.0);

        let plan = epoch(&spec(), &sampler, None, |indices| {
            indices.iter().map(|&i| (i != 3).then_some(1.0)).collect()
        });
        assert_eq!(plan.longest, DEFAULT_MAX_SECONDS);
    }

    #[test]
    fn epoch_with_bucketing_caps_durations_at_the_crop() {
        // Twenty 1 s items and twenty 8 s ones: ten buckets of four.
        let durations: Vec<f64> = (0..40).map(|i| if i < 20 { 1.0 } else { 8.0 }).collect();
        let sampler = sampler_spec(&spec(), durations.len() as u64);
        let probe = |indices: &[u64]| -> Vec<Option<f64>> {
            assert_eq!(indices.len(), 40, "bucketing probes every item");
            indices
                .iter()
                .map(|&i| Some(durations[i as usize]))
                .collect()
        };
        let bucketed = StreamSpec {
            max_batch_seconds: Some(8.0),
            ..spec()
        };
        let plan = epoch(&bucketed, &sampler, None, probe);
        assert_eq!(plan.longest, 8.0);
        // Each 8 s item is alone; the 1 s ones come four to a batch.
        assert_eq!(plan.batches.len(), 5 + 20);
        for batch in &plan.batches {
            let longest = batch
                .iter()
                .map(|&i| durations[i as usize])
                .fold(0.0, f64::max);
            assert!(batch.len() as f64 * longest <= 8.0, "{batch:?}");
        }

        // Cropped to 2 s, every batch holds four items.
        let cropped = StreamSpec {
            max_seconds: Some(2.0),
            ..bucketed
        };
        let plan = epoch(&cropped, &sampler, None, probe);
        assert_eq!(plan.longest, 2.0);
        assert_eq!(plan.batches.len(), 10);
        assert!(plan.batches.iter().all(|b| b.len() == 4));
    }

    #[test]
    fn epoch_with_bucketing_counts_unknown_lengths_as_the_longest_known() {
        // 38 items of 1 s, item 1 of 2 s, item 0 undeclared: it buckets as 2 s, so the last
        // bucket [1, 1, 2, 2] fits the 8 s budget in one batch.
        let sampler = sampler_spec(&spec(), 40);
        let bucketed = StreamSpec {
            max_batch_seconds: Some(8.0),
            ..spec()
        };
        let plan = epoch(&bucketed, &sampler, None, |indices| {
            indices
                .iter()
                .map(|&i| match i {
                    0 => None,
                    1 => Some(2.0),
                    _ => Some(1.0),
                })
                .collect()
        });
        assert_eq!(plan.batches.len(), 10);
        assert!(plan.batches.iter().all(|b| b.len() == 4));
        // The slot still takes the default: the undeclared file may be longer.
        assert_eq!(plan.longest, DEFAULT_MAX_SECONDS);
    }

    #[test]
    fn check_start_allows_the_end_but_not_past_it() {
        assert!(check_start(
            &StreamSpec {
                start_batch: 3,
                ..spec()
            },
            3
        )
        .is_ok());
        let err = check_start(
            &StreamSpec {
                start_batch: 4,
                ..spec()
            },
            3,
        )
        .unwrap_err();
        assert_eq!(err.message, "start_batch 4 past the 3 batches of the epoch");
    }

    #[test]
    fn batch_capacity_is_the_largest_batch() {
        assert_eq!(batch_capacity(&[]), 1);
        assert_eq!(batch_capacity(&[vec![]]), 1);
        assert_eq!(batch_capacity(&[vec![1, 2], vec![3, 4, 5], vec![6]]), 3);
    }

    #[test]
    fn depth_fixed_by_prefetch_or_from_the_budget() {
        let plan = budget(1 << 30);
        // A client-fixed prefetch fixes both, at least the minimum depth.
        assert_eq!(depth(6, 1 << 20, (&plan, 1)), (6, 6));
        assert_eq!(depth(1, 1 << 20, (&plan, 1)), (MIN_DEPTH, MIN_DEPTH));
        // The daemon's choice: room for the tuner's deepest, starting shallower.
        assert_eq!(
            depth(0, 1 << 20, (&plan, 1)),
            (tune::MAX_DEPTH, START_DEPTH)
        );
        // A budget that fits three slots for each of two streams.
        let tight = budget(6 << 20);
        assert_eq!(depth(0, 1 << 20, (&tight, 2)), (3, 3));
        // Nothing fits: still the minimum.
        assert_eq!(depth(0, 1 << 40, (&tight, 2)), (MIN_DEPTH, MIN_DEPTH));
    }

    #[test]
    fn ring_geometry_from_spec_and_epoch() {
        let epoch = EpochPlan {
            batches: vec![vec![0, 1, 2], vec![3]],
            longest: 2.0,
        };
        let plan = budget(1 << 40);
        let stereo = StreamSpec {
            mono: false,
            channels: 2,
            ..spec()
        };
        let daemon_chosen = ring(&stereo, &epoch, 1.0, (&plan, 1));
        assert_eq!(
            daemon_chosen.geometry,
            RingGeometry::new(tune::MAX_DEPTH, 3, 2, 32001, 16000)
        );
        assert_eq!(daemon_chosen.depth, START_DEPTH);

        let mono_fixed = StreamSpec {
            channels: 2,
            prefetch: 5,
            max_seconds: Some(1.0),
            ..spec()
        };
        let fixed = ring(&mono_fixed, &epoch, 1.0, (&plan, 1));
        assert_eq!(fixed.geometry, RingGeometry::new(5, 3, 1, 16000, 16000));
        assert_eq!(fixed.depth, 5);
    }

    #[test]
    fn check_fits_against_free_shared_memory() {
        let geometry = RingGeometry::new(4, 8, 1, 16000, 16000);
        let total = geometry.total_bytes();
        assert!(check_fits(&geometry, None).is_ok());
        assert!(check_fits(&geometry, Some(total)).is_ok());
        let err = check_fits(&geometry, Some(total - 1)).unwrap_err();
        assert!(err.message.contains("/dev/shm"), "{}", err.message);
    }
}
