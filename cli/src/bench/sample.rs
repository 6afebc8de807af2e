//! Deterministic choices for the load: a small xorshift generator and the entity distributions.
//!
//! The same seed gives the same sequence of entities on every machine, so two runs of a
//! workload differ only in timing. A [`Picker`] answers with a rank, 0 being the most popular
//! entity under Zipf; which entity a rank names is the caller's business (see `load.rs`, where
//! each in-flight worker of a conditional run owns its own entities).

use crate::bench::Distribution;

/// Entities a Zipf picker may spread over: its table holds one `f64` per entity (8 MB here).
pub const ZIPF_ENTITIES_MAX: u64 = 1_000_000;

/// A xorshift64* generator: fast, deterministic, and good enough to pick entities (not for
/// anything that needs unpredictability).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`; seeds that differ in one bit give unrelated sequences.
    pub fn new(seed: u64) -> Rng {
        // splitmix64 spreads the seed over all 64 bits, and xorshift's state must not be 0.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Rng(if z == 0 { 0x2545_f491_4f6c_dd1d } else { z })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `[0, 1)`, with 53 random bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A number in `[0, n)` (0 when `n` is 0), by multiply-shift: no division, a bias of at
    /// most `n / 2^64`.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Picks a rank in `[0, n)`: uniformly, or by Zipf's law (rank `k` with weight `1 / (k+1)^s`).
#[derive(Clone, Debug)]
pub enum Picker {
    /// Every rank equally likely.
    Uniform {
        /// The number of ranks.
        n: u64,
    },
    /// Zipf, by inversion of the precomputed cumulative distribution (a binary search).
    Zipf {
        /// `cdf[k]` is the probability of a rank `<= k`; the last entry is 1.
        cdf: Vec<f64>,
    },
}

impl Picker {
    /// A picker over `n` ranks (at least 1). For Zipf, `n` is at most [`ZIPF_ENTITIES_MAX`] and
    /// `exponent` is positive; the caller checks both.
    pub fn new(distribution: Distribution, n: u64, exponent: f64) -> Picker {
        assert!(
            n >= 1,
            "the bench checks that every picker has at least one rank"
        );
        match distribution {
            Distribution::Uniform => Picker::Uniform { n },
            Distribution::Zipf => {
                assert!(
                    n <= ZIPF_ENTITIES_MAX && exponent > 0.0,
                    "the bench checks the Zipf bounds"
                );
                let mut cdf = Vec::with_capacity(n as usize);
                let mut total = 0.0;
                for rank in 0..n {
                    total += 1.0 / ((rank + 1) as f64).powf(exponent);
                    cdf.push(total);
                }
                for share in &mut cdf {
                    *share /= total;
                }
                Picker::Zipf { cdf }
            }
        }
    }

    /// The next rank.
    pub fn pick(&self, rng: &mut Rng) -> u64 {
        match self {
            Picker::Uniform { n } => rng.below(*n),
            Picker::Zipf { cdf } => {
                let u = rng.unit();
                // Rounding can leave the last entry a hair below 1; clamp to the last rank.
                let rank = cdf.partition_point(|&share| share <= u);
                rank.min(cdf.len() - 1) as u64
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_sequence_and_another_seed_does_not() {
        let draw = |seed| {
            let mut rng = Rng::new(seed);
            (0..100).map(|_| rng.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        assert_ne!(
            Rng::new(0).next_u64(),
            0,
            "seed 0 still gives a working generator"
        );
    }

    #[test]
    fn below_and_unit_stay_in_range_and_cover_it() {
        let mut rng = Rng::new(1);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            let value = rng.below(10);
            assert!(value < 10);
            seen[value as usize] += 1;
            let unit = rng.unit();
            assert!((0.0..1.0).contains(&unit), "{unit}");
        }
        // Uniform within a few percent: each bucket expects 1,000.
        assert!(
            seen.iter().all(|&count| (850..1150).contains(&count)),
            "{seen:?}"
        );
        assert_eq!(rng.below(0), 0);
    }

    #[test]
    fn zipf_favours_low_ranks_by_the_exponent() {
        let picker = Picker::new(Distribution::Zipf, 1000, 1.0);
        let mut rng = Rng::new(3);
        let mut counts = vec![0u32; 1000];
        for _ in 0..200_000 {
            counts[picker.pick(&mut rng) as usize] += 1;
        }
        // With s = 1, rank 0 is twice as likely as rank 1 and ten times rank 9.
        let ratio_1 = f64::from(counts[0]) / f64::from(counts[1]);
        let ratio_9 = f64::from(counts[0]) / f64::from(counts[9]);
        assert!((1.8..2.2).contains(&ratio_1), "rank 0 / rank 1 = {ratio_1}");
        assert!(
            (8.5..11.5).contains(&ratio_9),
            "rank 0 / rank 9 = {ratio_9}"
        );
        // The harmonic number H(1000) is about 7.49, so rank 0 gets about 13%.
        let share = f64::from(counts[0]) / 200_000.0;
        assert!((0.12..0.147).contains(&share), "rank 0 share {share}");
        assert!(counts[999] > 0, "the tail is reached");
    }

    #[test]
    fn a_single_rank_is_always_picked() {
        let mut rng = Rng::new(5);
        for distribution in [Distribution::Uniform, Distribution::Zipf] {
            let picker = Picker::new(distribution, 1, 0.99);
            assert!((0..100).all(|_| picker.pick(&mut rng) == 0));
        }
    }
}
