//! Which items share a batch, per epoch: sequential, random (a fresh seeded
//! permutation per epoch), length-grouped (HF `group_by_length`), and a token budget
//! that caps padded tokens per batch so one very long text cannot blow up memory.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::error::CollateError;

/// Plans the batches of an epoch as lists of item indices.
pub trait BatchSampler {
    fn batches(&self, epoch: u64) -> Vec<Vec<usize>>;
}

fn epoch_permutation(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch);
    let mut p: Vec<usize> = (0..n).collect();
    p.shuffle(&mut rng);
    p
}

fn fixed_batches(order: Vec<usize>, batch_size: usize, drop_last: bool) -> Vec<Vec<usize>> {
    order
        .chunks(batch_size.max(1))
        .filter(|c| !drop_last || c.len() == batch_size)
        .map(<[usize]>::to_vec)
        .collect()
}

/// Items in order, `batch_size` at a time.
#[derive(Clone, Debug)]
pub struct SequentialSampler {
    pub len: usize,
    pub batch_size: usize,
    pub drop_last: bool,
}

impl BatchSampler for SequentialSampler {
    fn batches(&self, _epoch: u64) -> Vec<Vec<usize>> {
        fixed_batches((0..self.len).collect(), self.batch_size, self.drop_last)
    }
}

/// A permutation drawn from `(seed, epoch)`: reproducible, different each epoch.
#[derive(Clone, Debug)]
pub struct RandomSampler {
    pub len: usize,
    pub batch_size: usize,
    pub seed: u64,
    pub drop_last: bool,
}

impl BatchSampler for RandomSampler {
    fn batches(&self, epoch: u64) -> Vec<Vec<usize>> {
        fixed_batches(
            epoch_permutation(self.len, self.seed, epoch),
            self.batch_size,
            self.drop_last,
        )
    }
}

/// torch's `DistributedSampler` over [`RandomSampler`]'s permutation, cut into batches
/// of `batch_size`: the permutation is padded to a multiple of `world_size` by
/// repeating its start (as torch does, so every rank has as many items), and rank `r`
/// takes items `r, r + world_size, ...`. When the length divides evenly (no padding),
/// rank `r`'s batch `b` and the other ranks' batch `b` together hold exactly
/// [`RandomSampler`]'s batch `b` of `batch_size * world_size` items: a step of N ranks
/// trains on the batch one process with N times the batch would. Otherwise the last
/// step also repeats the permutation's first items, as torch's does.
#[derive(Clone, Debug)]
pub struct DistributedSampler {
    pub len: usize,
    pub batch_size: usize,
    pub seed: u64,
    pub drop_last: bool,
    pub rank: usize,
    pub world_size: usize,
}

impl DistributedSampler {
    /// This rank's items of epoch `epoch`, in order.
    pub fn shard(&self, epoch: u64) -> Vec<usize> {
        shard(
            epoch_permutation(self.len, self.seed, epoch),
            self.rank,
            self.world_size,
        )
    }
}

/// Rank `rank`'s share of `order`: padded to a multiple of `world_size` by repeating
/// its start, then every `world_size`-th item from `rank` (torch's DistributedSampler).
fn shard(mut order: Vec<usize>, rank: usize, world_size: usize) -> Vec<usize> {
    let world = world_size.max(1);
    let len = order.len();
    let total = len.div_ceil(world) * world;
    let mut i = 0;
    while order.len() < total && len > 0 {
        order.push(order[i]);
        i += 1;
    }
    order.into_iter().skip(rank).step_by(world).collect()
}

impl BatchSampler for DistributedSampler {
    fn batches(&self, epoch: u64) -> Vec<Vec<usize>> {
        fixed_batches(self.shard(epoch), self.batch_size, self.drop_last)
    }
}

/// HF's `LengthGroupedSampler`: a random permutation cut into megabatches of
/// `min(n / (4 * batch_size), 50)` batches, each sorted by length (longest first),
/// with the longest item of all moved to the very first batch (so an out-of-memory
/// shows at once).
#[derive(Clone, Debug)]
pub struct LengthGroupedSampler {
    pub lengths: Vec<usize>,
    pub batch_size: usize,
    pub seed: u64,
    /// Drop the last batch when it is short (HF's `dataloader_drop_last`).
    pub drop_last: bool,
}

impl LengthGroupedSampler {
    fn order(&self, epoch: u64) -> Vec<usize> {
        let n = self.lengths.len();
        let bs = self.batch_size.max(1);
        let mult = (n / (bs * 4)).clamp(1, 50);
        let mega = mult * bs;
        let perm = epoch_permutation(n, self.seed, epoch);
        let mut megabatches: Vec<Vec<usize>> = perm
            .chunks(mega)
            .map(|m| {
                let mut m = m.to_vec();
                // Stable sort, longest first, as Python's sorted(reverse=True).
                m.sort_by(|a, b| self.lengths[*b].cmp(&self.lengths[*a]));
                m
            })
            .collect();
        if let Some(max_idx) = (0..megabatches.len())
            .max_by_key(|&i| (self.lengths[megabatches[i][0]], std::cmp::Reverse(i)))
        {
            let first = megabatches[max_idx][0];
            megabatches[max_idx][0] = megabatches[0][0];
            megabatches[0][0] = first;
        }
        megabatches.into_iter().flatten().collect()
    }
}

impl BatchSampler for LengthGroupedSampler {
    fn batches(&self, epoch: u64) -> Vec<Vec<usize>> {
        fixed_batches(self.order(epoch), self.batch_size, self.drop_last)
    }
}

/// `group_by_length` with several ranks: [`LengthGroupedSampler`]'s order for the
/// global batch (`batch_size * world_size`), sharded as [`DistributedSampler`] shards
/// (padded by repeating its start, rank `r` taking items `r, r + world_size, ...`).
/// Rank `r`'s batch `b` and the other ranks' batch `b` together hold the
/// length-grouped batch `b` of one process with `batch_size * world_size` (when the
/// length divides evenly), so the ranks of a step pad to similar lengths and one rank
/// is the single-process sampler. The padding repeats the start of the order, which
/// here holds the epoch's longest items (as HF's sampler pads). HF's older `DistributedLengthGroupedSampler` shards
/// the same way but groups by the per-process batch size.
#[derive(Clone, Debug)]
pub struct DistributedLengthGroupedSampler {
    pub lengths: Vec<usize>,
    pub batch_size: usize,
    pub seed: u64,
    pub drop_last: bool,
    pub rank: usize,
    pub world_size: usize,
}

impl BatchSampler for DistributedLengthGroupedSampler {
    fn batches(&self, epoch: u64) -> Vec<Vec<usize>> {
        let global = LengthGroupedSampler {
            lengths: self.lengths.clone(),
            batch_size: self.batch_size.max(1) * self.world_size.max(1),
            seed: self.seed,
            drop_last: false,
        };
        fixed_batches(
            shard(global.order(epoch), self.rank, self.world_size),
            self.batch_size,
            self.drop_last,
        )
    }
}

/// An item's footprint in a padded batch: how many rows it adds (its chunks), the
/// length of its longest row, and its real tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ItemShape {
    pub rows: usize,
    pub max_len: usize,
    pub tokens: usize,
}

impl ItemShape {
    /// The shape of an item made of rows of these lengths (chunks of one text).
    pub fn of_rows(lengths: &[usize]) -> Self {
        ItemShape {
            rows: lengths.len(),
            max_len: lengths.iter().copied().max().unwrap_or(0),
            tokens: lengths.iter().sum(),
        }
    }
}

/// Batches capped by padded tokens: `(rows in batch) * (longest row in batch) <=
/// max_tokens`, every chunk counted, and at most `max_items` items. An item over the
/// budget alone gets a batch to itself. Items come shuffled per epoch, then grouped by
/// length like [`LengthGroupedSampler`] when `group_by_length`, to cut padding.
#[derive(Clone, Debug)]
pub struct TokenBudgetSampler {
    shapes: Vec<ItemShape>,
    max_tokens: usize,
    max_items: usize,
    seed: u64,
    group_by_length: bool,
}

impl TokenBudgetSampler {
    pub fn new(
        shapes: Vec<ItemShape>,
        max_tokens: usize,
        max_items: usize,
        seed: u64,
        group_by_length: bool,
    ) -> Result<Self, CollateError> {
        if max_tokens == 0 || max_items == 0 {
            return Err(CollateError::Sampler(
                "max_tokens and max_items must be positive".into(),
            ));
        }
        Ok(TokenBudgetSampler {
            shapes,
            max_tokens,
            max_items,
            seed,
            group_by_length,
        })
    }
}

impl BatchSampler for TokenBudgetSampler {
    fn batches(&self, epoch: u64) -> Vec<Vec<usize>> {
        let order = if self.group_by_length {
            LengthGroupedSampler {
                lengths: self.shapes.iter().map(|s| s.rows * s.max_len).collect(),
                batch_size: self.max_items,
                seed: self.seed,
                drop_last: false,
            }
            .order(epoch)
        } else {
            epoch_permutation(self.shapes.len(), self.seed, epoch)
        };
        let mut out = Vec::new();
        let mut cur: Vec<usize> = Vec::new();
        let (mut rows, mut max_len) = (0, 0);
        for i in order {
            let s = self.shapes[i];
            let would = (rows + s.rows) * max_len.max(s.max_len);
            if !cur.is_empty() && (would > self.max_tokens || cur.len() == self.max_items) {
                out.push(std::mem::take(&mut cur));
                rows = 0;
                max_len = 0;
            }
            cur.push(i);
            rows += s.rows;
            max_len = max_len.max(s.max_len);
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        out
    }
}

/// Real tokens / padded tokens over all batches (1.0 = no padding at all).
pub fn padding_efficiency(batches: &[Vec<usize>], shapes: &[ItemShape]) -> f64 {
    let (mut real, mut padded) = (0usize, 0usize);
    for b in batches {
        let rows: usize = b.iter().map(|&i| shapes[i].rows).sum();
        let max_len = b.iter().map(|&i| shapes[i].max_len).max().unwrap_or(0);
        real += b.iter().map(|&i| shapes[i].tokens).sum::<usize>();
        padded += rows * max_len;
    }
    if padded == 0 {
        1.0
    } else {
        real as f64 / padded as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Whether each rank's batch b together hold the items of `single`'s batch b.
    fn ranks_make_single(ranks: &[Vec<Vec<usize>>], single: &[Vec<usize>]) -> bool {
        single.iter().enumerate().all(|(b, want)| {
            let got: Vec<Vec<usize>> = ranks.iter().filter_map(|r| r.get(b).cloned()).collect();
            flat(&got) == flat(std::slice::from_ref(want))
        })
    }

    fn flat(b: &[Vec<usize>]) -> Vec<usize> {
        let mut v: Vec<usize> = b.iter().flatten().copied().collect();
        v.sort();
        v
    }

    #[test]
    fn distributed_shards_pad_like_torch_and_are_disjoint() {
        let shard = |rank, world, len| {
            DistributedSampler {
                len,
                batch_size: 2,
                seed: 3,
                drop_last: false,
                rank,
                world_size: world,
            }
            .shard(0)
        };
        let perm = epoch_permutation(5, 3, 0);
        // 5 items on 2 ranks: padded to 6 with the permutation's first item.
        assert_eq!(shard(0, 2, 5), vec![perm[0], perm[2], perm[4]]);
        assert_eq!(shard(1, 2, 5), vec![perm[1], perm[3], perm[0]]);
        // 2 items on 4 ranks: the padding wraps around more than once.
        let perm2 = epoch_permutation(2, 3, 0);
        let all: Vec<usize> = (0..4).flat_map(|r| shard(r, 4, 2)).collect();
        assert_eq!(all, vec![perm2[0], perm2[1], perm2[0], perm2[1]]);
        assert!(shard(0, 3, 0).is_empty());
        // One rank is the random sampler.
        let one = DistributedSampler {
            len: 11,
            batch_size: 4,
            seed: 9,
            drop_last: true,
            rank: 0,
            world_size: 1,
        };
        let random = RandomSampler {
            len: 11,
            batch_size: 4,
            seed: 9,
            drop_last: true,
        };
        assert_eq!(one.batches(2), random.batches(2));
    }

    proptest! {
        #[test]
        fn ranks_batch_b_together_are_the_single_process_batch_b(
            steps in 1usize..6,
            batch in 1usize..5,
            world in 1usize..5,
            seed in any::<u64>(),
            epoch in 0u64..3,
        ) {
            let len = steps * batch * world;
            let single = RandomSampler { len, batch_size: batch * world, seed, drop_last: false }
                .batches(epoch);
            let ranks: Vec<Vec<Vec<usize>>> = (0..world)
                .map(|rank| {
                    DistributedSampler { len, batch_size: batch, seed, drop_last: false, rank, world_size: world }
                        .batches(epoch)
                })
                .collect();
            prop_assert_eq!(single.len(), steps);
            prop_assert!(ranks_make_single(&ranks, &single));
        }
    }

    proptest! {
        #[test]
        fn grouped_ranks_batch_b_together_are_the_single_process_grouped_batch_b(
            lengths in proptest::collection::vec(1usize..64, 1..60),
            batch in 1usize..5,
            world in 1usize..5,
            seed in any::<u64>(),
            epoch in 0u64..3,
        ) {
            let len = lengths.len();
            let single = LengthGroupedSampler { lengths: lengths.clone(), batch_size: batch * world, seed, drop_last: false }
                .batches(epoch);
            let ranks: Vec<Vec<Vec<usize>>> = (0..world)
                .map(|rank| {
                    DistributedLengthGroupedSampler {
                        lengths: lengths.clone(), batch_size: batch, seed, drop_last: false, rank, world_size: world,
                    }
                    .batches(epoch)
                })
                .collect();
            // Every rank has as many items (padded as torch pads), and together the
            // ranks cover every item.
            let per_rank = len.div_ceil(world);
            for r in &ranks {
                prop_assert_eq!(r.iter().map(Vec::len).sum::<usize>(), per_rank);
            }
            let mut covered: Vec<usize> = ranks.iter().flatten().flatten().copied().collect();
            covered.sort();
            covered.dedup();
            prop_assert_eq!(covered, (0..len).collect::<Vec<_>>());
            if len % (batch * world) == 0 {
                prop_assert!(ranks_make_single(&ranks, &single));
            }
            if world == 1 {
                prop_assert_eq!(&ranks[0], &single);
            }
        }
    }

    #[test]
    fn sequential_and_drop_last() {
        let s = SequentialSampler {
            len: 5,
            batch_size: 2,
            drop_last: false,
        };
        assert_eq!(s.batches(0), vec![vec![0, 1], vec![2, 3], vec![4]]);
        let s = SequentialSampler {
            drop_last: true,
            ..s
        };
        assert_eq!(s.batches(3), vec![vec![0, 1], vec![2, 3]]);
    }

    #[test]
    fn random_sampler_is_reproducible_and_fresh_per_epoch() {
        let s = RandomSampler {
            len: 100,
            batch_size: 8,
            seed: 1,
            drop_last: false,
        };
        assert_eq!(s.batches(0), s.batches(0));
        assert_ne!(s.batches(0), s.batches(1));
        assert_eq!(flat(&s.batches(2)), (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn length_grouping_puts_the_longest_item_first_and_cuts_padding() {
        let lengths: Vec<usize> = (0..400).map(|i| (i * 37) % 500 + 1).collect();
        let shapes: Vec<ItemShape> = lengths.iter().map(|&l| ItemShape::of_rows(&[l])).collect();
        let g = LengthGroupedSampler {
            lengths: lengths.clone(),
            batch_size: 8,
            seed: 0,
            drop_last: false,
        };
        let batches = g.batches(0);
        // 400 = 50 x 8: nothing to drop; with 403 items the short batch goes.
        let mut three_more = lengths.clone();
        three_more.extend([1, 2, 3]);
        let drop = LengthGroupedSampler {
            lengths: three_more,
            drop_last: true,
            ..g.clone()
        };
        assert_eq!(drop.batches(0).len(), 50);
        assert!(drop.batches(0).iter().all(|b| b.len() == 8));
        assert_eq!(lengths[batches[0][0]], *lengths.iter().max().unwrap());
        assert_eq!(flat(&batches), (0..400).collect::<Vec<_>>());
        let random = RandomSampler {
            len: 400,
            batch_size: 8,
            seed: 0,
            drop_last: false,
        }
        .batches(0);
        assert!(padding_efficiency(&batches, &shapes) > padding_efficiency(&random, &shapes) + 0.2);
    }

    #[test]
    fn token_budget_caps_padded_tokens_and_isolates_giants() {
        // 50 short texts and one of six 512-token chunks (a 3,000-token review).
        let mut shapes: Vec<ItemShape> = (0..50).map(|_| ItemShape::of_rows(&[200])).collect();
        shapes.push(ItemShape::of_rows(&[512; 6]));
        let s = TokenBudgetSampler::new(shapes.clone(), 2048, 16, 3, false).unwrap();
        let batches = s.batches(0);
        assert_eq!(flat(&batches), (0..51).collect::<Vec<_>>());
        for b in &batches {
            let rows: usize = b.iter().map(|&i| shapes[i].rows).sum();
            let max_len = b.iter().map(|&i| shapes[i].max_len).max().unwrap();
            assert!(
                rows * max_len <= 2048 || b.len() == 1,
                "batch {b:?} over budget"
            );
            assert!(b.len() <= 16);
        }
        let giant = batches.iter().find(|b| b.contains(&50)).unwrap();
        assert_eq!(giant, &vec![50]);
    }

    proptest! {
        #[test]
        fn every_sampler_covers_each_item_once(n in 0usize..300, bs in 1usize..40, seed in any::<u64>(), epoch in 0u64..4) {
            let lengths: Vec<usize> = (0..n).map(|i| (i * 31 + seed as usize % 97) % 300 + 1).collect();
            let shapes: Vec<ItemShape> = lengths.iter().map(|&l| ItemShape::of_rows(&[l])).collect();
            let want: Vec<usize> = (0..n).collect();
            prop_assert_eq!(flat(&SequentialSampler { len: n, batch_size: bs, drop_last: false }.batches(epoch)), want.clone());
            prop_assert_eq!(flat(&RandomSampler { len: n, batch_size: bs, seed, drop_last: false }.batches(epoch)), want.clone());
            prop_assert_eq!(flat(&LengthGroupedSampler { lengths, batch_size: bs, seed, drop_last: false }.batches(epoch)), want.clone());
            let tb = TokenBudgetSampler::new(shapes, 1024, bs, seed, true).unwrap();
            prop_assert_eq!(flat(&tb.batches(epoch)), want);
        }
    }
}
