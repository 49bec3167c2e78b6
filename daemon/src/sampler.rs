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
        let mut rng = SplitMix64::for_item(spec.seed, spec.epoch, u64::MAX);
        for i in (1..order.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
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

    #[test]
    fn below_stays_in_range() {
        let mut rng = SplitMix64::new(1);
        assert!((0..1000).all(|_| rng.below(7) < 7));
    }
}
