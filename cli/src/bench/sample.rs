//! Deterministic choices for the load: a small xorshift generator and the entity distributions.
//!
//! The same seed gives the same sequence of entities on every machine, so two runs of a
//! workload differ only in timing. A [`Picker`] answers with a rank, 0 being the most popular
//! entity under Zipf; which entity a rank names is the caller's business (see `load.rs`, where
//! each in-flight worker of a conditional run owns its own entities). Zipf samples come from
//! `rand_distr` (rejection-inversion: constant time and memory per sample, whatever the number
//! of entities), driven by the generator here.

use std::convert::Infallible;

use rand_distr::Distribution as _;

use crate::bench::Distribution;

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

    /// A number in `[0, n)` (0 when `n` is 0), by multiply-shift: no division, a bias of at
    /// most `n / 2^64`.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// `rand_distr` draws through `rand_core`'s generator trait; this generator never fails.
impl rand_core::TryRng for Rng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        // The high bits: xorshift64*'s best.
        Ok((self.next_u64() >> 32) as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.next_u64())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        rand_core::utils::fill_bytes_via_next_word(dst, || self.try_next_u64())
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
    /// Zipf over ranks `1..=n`, shifted to start at 0.
    Zipf {
        /// The number of ranks.
        n: u64,
        /// The distribution.
        zipf: rand_distr::Zipf<f64>,
    },
}

impl Picker {
    /// A picker over `n` ranks (at least 1). For Zipf, `exponent` is positive; the caller
    /// checks it.
    pub fn new(distribution: Distribution, n: u64, exponent: f64) -> Picker {
        assert!(
            n >= 1,
            "the bench checks that every picker has at least one rank"
        );
        match distribution {
            Distribution::Uniform => Picker::Uniform { n },
            Distribution::Zipf => Picker::Zipf {
                n,
                zipf: rand_distr::Zipf::new(n as f64, exponent)
                    .expect("the bench checks that the Zipf exponent is positive"),
            },
        }
    }

    /// The next rank.
    pub fn pick(&self, rng: &mut Rng) -> u64 {
        match self {
            Picker::Uniform { n } => rng.below(*n),
            // A sample is a whole number in [1, n] as a float; clamp in case rounding does not.
            Picker::Zipf { n, zipf } => (zipf.sample(rng) as u64).clamp(1, *n) - 1,
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
    fn below_stays_in_range_and_covers_it() {
        let mut rng = Rng::new(1);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            let value = rng.below(10);
            assert!(value < 10);
            seen[value as usize] += 1;
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
