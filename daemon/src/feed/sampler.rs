//! Which items go into which batch: seeded shuffling, DDP sharding and batching.
//!
//! Sharding follows `torch.utils.data.DistributedSampler`, so every rank gets the same
//! number of items and therefore the same number of batches (a DDP job hangs otherwise):
//! with `drop_last` the tail that does not divide evenly is dropped (shards are disjoint);
//! without it the order is padded by wrapping around (shards are complete, and at most
//! `world_size - 1` items appear twice).

/// SplitMix64: tiny, fast and well mixed; enough for shuffles and crop offsets, and stable
/// across versions (unlike a library RNG whose stream may change on upgrade).
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// An independent stream for a (seed, epoch, item) triple.
    pub fn for_item(seed: u64, epoch: u64, item: u64) -> Self {
        let mut mix = Self(seed ^ 0x9e37_79b9_7f4a_7c15);
        let a = mix.next_u64() ^ epoch.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let mut mix = Self(a);
        Self(mix.next_u64() ^ item.wrapping_mul(0x94d0_49bb_1331_11eb))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), without modulo bias worth worrying about at these sizes.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Clone, Copy, Debug)]
pub struct SamplerSpec {
    pub items: u64,
    pub batch_size: u64,
    pub shuffle: bool,
    pub seed: u64,
    pub epoch: u64,
    pub rank: u64,
    pub world_size: u64,
    pub drop_last: bool,
}

/// The batches (item indices) this rank sees in this epoch.
pub fn epoch_batches(spec: &SamplerSpec) -> Vec<Vec<u64>> {
    let n = spec.items;
    let world = spec.world_size.max(1);
    let mut order: Vec<u64> = (0..n).collect();
    if spec.shuffle {
        shuffle(
            &mut order,
            &mut SplitMix64::for_item(spec.seed, spec.epoch, u64::MAX),
        );
    }
    let per_rank = if spec.drop_last {
        n / world
    } else {
        n.div_ceil(world)
    };
    let total = per_rank * world;
    if total > n && n > 0 {
        // Pad by wrapping around, repeating the order as often as needed (tiny datasets).
        let mut k = 0;
        while (order.len() as u64) < total {
            order.push(order[k]);
            k += 1;
        }
    }
    order.truncate(total as usize);
    let mine: Vec<u64> = order
        .into_iter()
        .skip(spec.rank as usize)
        .step_by(world as usize)
        .collect();
    let batch = spec.batch_size.max(1) as usize;
    let mut batches: Vec<Vec<u64>> = mine.chunks(batch).map(<[u64]>::to_vec).collect();
    if spec.drop_last && batches.last().is_some_and(|b| b.len() < batch) {
        batches.pop();
    }
    batches
}

/// Quantile buckets for duration bucketing: enough that items in one bucket have similar
/// lengths, few enough that each bucket still shuffles well.
const BUCKETS: usize = 10;

/// Duration bucketing: batches of similar-length items whose padded size (items x longest)
/// stays within `max_batch_seconds`, in a shuffled order. Every rank computes the same
/// global batch list and takes every `world_size`-th batch, so batch counts are equal.
pub fn bucketed_batches(
    spec: &SamplerSpec,
    durations: &[f64],
    max_batch_seconds: f64,
) -> Vec<Vec<u64>> {
    let n = durations.len();
    let mut order: Vec<u64> = (0..n as u64).collect();
    let mut rng = SplitMix64::for_item(spec.seed, spec.epoch, u64::MAX - 1);
    if spec.shuffle {
        shuffle(&mut order, &mut rng);
    }
    // Stable sort: equal durations keep the shuffled order.
    order.sort_by(|&a, &b| durations[a as usize].total_cmp(&durations[b as usize]));
    let mut batches: Vec<Vec<u64>> = Vec::new();
    let per_bucket = n.div_ceil(BUCKETS).max(1);
    for bucket in order.chunks_mut(per_bucket) {
        if spec.shuffle {
            shuffle(bucket, &mut rng);
        }
        let mut current: Vec<u64> = Vec::new();
        let mut longest = 0.0f64;
        for &item in bucket.iter() {
            let d = durations[item as usize];
            let padded = (current.len() + 1) as f64 * longest.max(d);
            if !current.is_empty() && padded > max_batch_seconds {
                batches.push(std::mem::take(&mut current));
                longest = 0.0;
            }
            longest = longest.max(d);
            current.push(item);
        }
        if !current.is_empty() {
            batches.push(current);
        }
    }
    if spec.shuffle {
        shuffle(&mut batches, &mut rng);
    }
    let world = spec.world_size.max(1) as usize;
    let total = if spec.drop_last {
        batches.len() / world * world
    } else {
        batches.len().div_ceil(world) * world
    };
    // Pad by repeating batches from the start, as the item sampler pads items.
    let mut k = 0;
    while batches.len() < total {
        batches.push(batches[k].clone());
        k += 1;
    }
    batches.truncate(total);
    batches
        .into_iter()
        .skip(spec.rank as usize)
        .step_by(world)
        .collect()
}

/// Shards whose items are shuffled together: the shuffle buffer, in shards. Only this many
/// shards are read at a time, so a remote shard is fetched about once per epoch.
pub const SHARD_WINDOW: usize = 4;

/// The order for a sharded dataset (`groups[i]` is item i's shard): shards in a seeded
/// order, dealt to ranks whole (each rank reads only its shards), items shuffled within
/// windows of [`SHARD_WINDOW`] shards. Every rank gets the same number of items, as the
/// item sampler gives: without `drop_last` a short rank wraps around its own order, with it
/// the long ranks stop at the shortest rank's count. With fewer shards than ranks, shards
/// cannot be dealt whole and items are dealt one by one.
pub fn sharded_batches(spec: &SamplerSpec, groups: &[u32]) -> Vec<Vec<u64>> {
    let world = spec.world_size.max(1) as usize;
    let rank = spec.rank as usize;
    let n_shards = groups.iter().map(|&g| g as usize + 1).max().unwrap_or(0);
    let mut members: Vec<Vec<u64>> = vec![Vec::new(); n_shards];
    for (i, &g) in groups.iter().enumerate() {
        members[g as usize].push(i as u64);
    }
    let mut shard_order: Vec<usize> = (0..n_shards).collect();
    if spec.shuffle {
        shuffle(
            &mut shard_order,
            &mut SplitMix64::for_item(spec.seed, spec.epoch, u64::MAX - 2),
        );
    }
    let windowed = |shards: &[usize], stream: u64| -> Vec<u64> {
        let mut order = Vec::new();
        for (w, window) in shards.chunks(SHARD_WINDOW).enumerate() {
            let start = order.len();
            for &shard in window {
                order.extend_from_slice(&members[shard]);
            }
            if spec.shuffle {
                let salt = stream.wrapping_mul(1 << 32).wrapping_add(w as u64);
                shuffle(
                    &mut order[start..],
                    &mut SplitMix64::for_item(spec.seed ^ 0x5eed, spec.epoch, salt),
                );
            }
        }
        order
    };
    let batch = spec.batch_size.max(1) as usize;
    let into_batches = |order: Vec<u64>| -> Vec<Vec<u64>> {
        let mut batches: Vec<Vec<u64>> = order.chunks(batch).map(<[u64]>::to_vec).collect();
        if spec.drop_last && batches.last().is_some_and(|b| b.len() < batch) {
            batches.pop();
        }
        batches
    };
    if n_shards < world {
        let sampler = SamplerSpec {
            shuffle: false,
            ..*spec
        };
        let order = windowed(&shard_order, u64::MAX);
        return epoch_batches(&sampler)
            .into_iter()
            .map(|b| b.into_iter().map(|k| order[k as usize]).collect())
            .collect();
    }
    let dealt: Vec<Vec<usize>> = (0..world)
        .map(|r| shard_order.iter().copied().skip(r).step_by(world).collect())
        .collect();
    let counts: Vec<usize> = dealt
        .iter()
        .map(|shards| shards.iter().map(|&s| members[s].len()).sum())
        .collect();
    let target = if spec.drop_last {
        counts.iter().copied().min().unwrap_or(0)
    } else {
        counts.iter().copied().max().unwrap_or(0)
    };
    let mut mine = windowed(&dealt[rank], rank as u64);
    if mine.is_empty() {
        return Vec::new();
    }
    let own = mine.len();
    let mut k = 0;
    while mine.len() < target {
        mine.push(mine[k % own]);
        k += 1;
    }
    mine.truncate(target);
    into_batches(mine)
}

fn shuffle<T>(items: &mut [T], rng: &mut SplitMix64) {
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn spec(items: u64, batch: u64, rank: u64, world: u64, drop_last: bool) -> SamplerSpec {
        SamplerSpec {
            items,
            batch_size: batch,
            shuffle: true,
            seed: 7,
            epoch: 1,
            rank,
            world_size: world,
            drop_last,
        }
    }

    /// 10 shards of uneven sizes (3..=12 items).
    fn uneven_groups() -> Vec<u32> {
        (0..10u32)
            .flat_map(|g| std::iter::repeat_n(g, 3 + g as usize))
            .collect()
    }

    #[test]
    fn sharded_order_reads_each_item_once_and_keeps_shards_together() {
        let groups = uneven_groups();
        let n = groups.len() as u64;
        let batches = sharded_batches(&spec(n, 4, 0, 1, false), &groups);
        let all: Vec<u64> = batches.concat();
        assert_eq!(all.len() as u64, n);
        assert_eq!(all.iter().copied().collect::<HashSet<_>>().len() as u64, n);
        // Items of a window of shards come together: the shards touched by the first
        // SHARD_WINDOW shards' worth of items are at most SHARD_WINDOW.
        let first_window = groups.len() / 10 * SHARD_WINDOW / 2;
        let touched: HashSet<u32> = all[..first_window]
            .iter()
            .map(|&i| groups[i as usize])
            .collect();
        assert!(touched.len() <= SHARD_WINDOW, "{touched:?}");
        assert_eq!(batches, sharded_batches(&spec(n, 4, 0, 1, false), &groups));
        let other_epoch = SamplerSpec {
            epoch: 2,
            ..spec(n, 4, 0, 1, false)
        };
        assert_ne!(batches, sharded_batches(&other_epoch, &groups));
    }

    #[test]
    fn sharded_ranks_get_whole_shards_and_equal_batch_counts() {
        let groups = uneven_groups();
        let n = groups.len() as u64;
        for drop_last in [false, true] {
            let per_rank: Vec<Vec<Vec<u64>>> = (0..3)
                .map(|r| sharded_batches(&spec(n, 4, r, 3, drop_last), &groups))
                .collect();
            let counts: Vec<usize> = per_rank.iter().map(Vec::len).collect();
            assert!(counts.iter().all(|&c| c == counts[0]), "{counts:?}");
            let shards: Vec<HashSet<u32>> = per_rank
                .iter()
                .map(|b| b.concat().iter().map(|&i| groups[i as usize]).collect())
                .collect();
            for a in 0..3 {
                for b in a + 1..3 {
                    assert!(
                        shards[a].is_disjoint(&shards[b]),
                        "ranks {a} and {b} share shards"
                    );
                }
            }
            let seen: HashSet<u64> = per_rank.iter().flat_map(|b| b.concat()).collect();
            if !drop_last {
                assert_eq!(seen.len() as u64, n, "every item is read without drop_last");
            }
        }
        // Fewer shards than ranks: items are dealt one by one, still equal counts.
        let two_shards: Vec<u32> = (0..2u32).flat_map(|g| std::iter::repeat_n(g, 7)).collect();
        let counts: Vec<usize> = (0..4)
            .map(|r| sharded_batches(&spec(14, 2, r, 4, false), &two_shards).len())
            .collect();
        assert!(
            counts.iter().all(|&c| c == counts[0] && c > 0),
            "{counts:?}"
        );
    }

    #[test]
    fn single_rank_sees_every_item_once() {
        let batches = epoch_batches(&spec(103, 10, 0, 1, false));
        let all: Vec<u64> = batches.concat();
        assert_eq!(all.len(), 103);
        assert_eq!(all.iter().copied().collect::<HashSet<_>>().len(), 103);
        assert_eq!(batches.len(), 11);
        assert_eq!(batches.last().map(Vec::len), Some(3));
    }

    #[test]
    fn order_depends_on_seed_and_epoch_only() {
        let a = epoch_batches(&spec(50, 8, 0, 1, false));
        assert_eq!(a, epoch_batches(&spec(50, 8, 0, 1, false)));
        let mut other_epoch = spec(50, 8, 0, 1, false);
        other_epoch.epoch = 2;
        assert_ne!(a, epoch_batches(&other_epoch));
    }

    #[test]
    fn ddp_shards_have_equal_batch_counts() {
        for drop_last in [false, true] {
            for world in [2u64, 3, 4] {
                let shards: Vec<Vec<Vec<u64>>> = (0..world)
                    .map(|r| epoch_batches(&spec(65, 8, r, world, drop_last)))
                    .collect();
                let counts: HashSet<usize> = shards.iter().map(Vec::len).collect();
                assert_eq!(counts.len(), 1, "world {world} drop_last {drop_last}");
                let seen: Vec<u64> = shards.iter().flat_map(|s| s.concat()).collect();
                let unique: HashSet<u64> = seen.iter().copied().collect();
                if drop_last {
                    assert_eq!(unique.len(), seen.len(), "disjoint");
                } else {
                    assert_eq!(unique.len(), 65, "complete");
                    assert!(seen.len() - 65 < world as usize);
                }
            }
        }
    }

    fn durations(n: usize) -> Vec<f64> {
        let mut rng = SplitMix64::new(5);
        (0..n).map(|_| 1.0 + 14.0 * rng.unit()).collect()
    }

    fn padding_share(batches: &[Vec<u64>], d: &[f64]) -> f64 {
        let (mut real, mut padded) = (0.0, 0.0);
        for b in batches {
            let longest = b.iter().map(|&i| d[i as usize]).fold(0.0, f64::max);
            real += b.iter().map(|&i| d[i as usize]).sum::<f64>();
            padded += longest * b.len() as f64;
        }
        1.0 - real / padded
    }

    #[test]
    fn bucketing_keeps_every_item_once_and_cuts_padding() {
        let d = durations(500);
        let s = spec(500, 32, 0, 1, false);
        let buckets = bucketed_batches(&s, &d, 120.0);
        let all: Vec<u64> = buckets.concat();
        assert_eq!(all.len(), 500);
        assert_eq!(all.iter().copied().collect::<HashSet<_>>().len(), 500);
        for b in &buckets {
            let longest = b.iter().map(|&i| d[i as usize]).fold(0.0, f64::max);
            assert!(b.len() == 1 || longest * b.len() as f64 <= 120.0);
        }
        let fixed = epoch_batches(&s);
        let (bucketed, plain) = (padding_share(&buckets, &d), padding_share(&fixed, &d));
        assert!(
            bucketed < plain / 3.0,
            "bucketed {bucketed:.3} vs fixed {plain:.3}"
        );
        let mut next_epoch = s;
        next_epoch.epoch += 1;
        assert_ne!(buckets, bucketed_batches(&next_epoch, &d, 120.0));
    }

    #[test]
    fn bucketing_gives_ranks_equal_batch_counts() {
        let d = durations(301);
        for drop_last in [false, true] {
            let shards: Vec<Vec<Vec<u64>>> = (0..3)
                .map(|r| bucketed_batches(&spec(301, 32, r, 3, drop_last), &d, 90.0))
                .collect();
            assert_eq!(shards.iter().map(Vec::len).collect::<HashSet<_>>().len(), 1);
            let seen: HashSet<u64> = shards.iter().flat_map(|s| s.concat()).collect();
            if !drop_last {
                assert_eq!(seen.len(), 301, "complete");
            }
        }
    }

    #[test]
    fn below_stays_in_range() {
        let mut rng = SplitMix64::new(1);
        assert!((0..1000).all(|_| rng.below(7) < 7));
    }
}
