//! Seeded random streams and the few samplers the simulator draws from.
//!
//! Byte-identical output for a seed is a promise the simulator makes across machines,
//! thread counts and releases, so the generator and its samplers are pinned here rather than
//! borrowed from a crate whose value streams may change between versions: xoshiro256++
//! (Blackman and Vigna), seeded through SplitMix64, and textbook samplers (inversion,
//! Box-Muller, Knuth's Poisson for small means, a rounded normal for large ones).
//!
//! Streams are *derived*, never shared: [`SimRng::derive`] hashes the run seed with a stream
//! label and a key (a location, a pair), so every pair draws from its own stream and the
//! order in which threads run cannot change any value.

/// One stream of random numbers.
#[derive(Clone, Debug)]
pub struct SimRng {
    state: [u64; 4],
}

/// SplitMix64: the seed expander (and a good 64-bit mixer).
pub fn split_mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// What a stream is for: keeps the streams of one key apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    /// The world's layout (pair parameters, velocity classes).
    Layout = 1,
    /// A pair's physical life (demand, shrink, shipments, counts).
    Physics = 2,
    /// A pair's feed faults (delays, duplicates).
    Feeds = 3,
    /// A pair's queries.
    Queries = 4,
}

impl SimRng {
    /// The stream `stream` of key `key` under run seed `seed`.
    pub fn derive(seed: u64, stream: Stream, key: u64) -> Self {
        let mut mix = split_mix(seed ^ split_mix(stream as u64 ^ split_mix(key)));
        let mut state = [0u64; 4];
        for word in &mut state {
            mix = split_mix(mix);
            *word = mix;
        }
        if state == [0; 4] {
            state[0] = 1;
        }
        Self { state }
    }

    /// The next 64 random bits (xoshiro256++).
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in (0, 1]: safe under a logarithm.
    fn open_unit(&mut self) -> f64 {
        1.0 - self.unit()
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Uniform integer in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in [low, high).
    pub fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }

    /// Exponential with the given mean.
    pub fn exponential(&mut self, mean: f64) -> f64 {
        -mean * self.open_unit().ln()
    }

    /// Standard normal (Box-Muller, one of the pair).
    pub fn normal(&mut self) -> f64 {
        let radius = (-2.0 * self.open_unit().ln()).sqrt();
        radius * (std::f64::consts::TAU * self.unit()).cos()
    }

    /// Log-normal with the given median and log-scale spread.
    pub fn log_normal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }

    /// Pareto (type I) with the given scale (minimum) and shape: a heavy tail.
    pub fn pareto(&mut self, scale: f64, shape: f64) -> f64 {
        scale / self.open_unit().powf(1.0 / shape)
    }

    /// Poisson with the given mean.
    pub fn poisson(&mut self, mean: f64) -> u64 {
        if mean <= 0.0 {
            return 0;
        }
        if mean > 40.0 {
            return (mean + mean.sqrt() * self.normal()).round().max(0.0) as u64;
        }
        let limit = (-mean).exp();
        let mut product = self.unit();
        let mut count = 0;
        while product > limit {
            product *= self.unit();
            count += 1;
        }
        count
    }

    /// Binomial: successes among `trials` each with probability `p`.
    pub fn binomial(&mut self, trials: u64, p: f64) -> u64 {
        if trials <= 64 {
            return (0..trials).filter(|_| self.chance(p)).count() as u64;
        }
        let mean = trials as f64 * p;
        let spread = (mean * (1.0 - p)).sqrt();
        (mean + spread * self.normal())
            .round()
            .clamp(0.0, trials as f64) as u64
    }

    /// Geometric on 1, 2, ... with the given mean (>= 1).
    pub fn geometric(&mut self, mean: f64) -> u64 {
        if mean <= 1.0 {
            return 1;
        }
        let p = 1.0 / mean;
        1 + (self.open_unit().ln() / (1.0 - p).ln()).floor() as u64
    }

    /// An index drawn in proportion to `weights` (the last index if all are zero).
    pub fn weighted(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut pick = self.unit() * total;
        for (index, weight) in weights.iter().enumerate() {
            if pick < *weight {
                return index;
            }
            pick -= weight;
        }
        weights.len().saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_apart() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut rng = SimRng::derive(7, Stream::Physics, 42);
                move |_| rng.next_u64()
            })
            .collect();
        let mut again = SimRng::derive(7, Stream::Physics, 42);
        assert_eq!(a, (0..4).map(|_| again.next_u64()).collect::<Vec<_>>());
        let mut other_key = SimRng::derive(7, Stream::Physics, 43);
        let mut other_stream = SimRng::derive(7, Stream::Feeds, 42);
        let mut other_seed = SimRng::derive(8, Stream::Physics, 42);
        assert_ne!(a[0], other_key.next_u64());
        assert_ne!(a[0], other_stream.next_u64());
        assert_ne!(a[0], other_seed.next_u64());
    }

    #[test]
    fn samplers_have_their_means() {
        let mut rng = SimRng::derive(1, Stream::Layout, 0);
        let n = 200_000;
        let mean = |values: Vec<f64>| values.iter().sum::<f64>() / values.len() as f64;
        let poisson_small = mean((0..n).map(|_| rng.poisson(3.0) as f64).collect());
        let poisson_large = mean((0..n).map(|_| rng.poisson(90.0) as f64).collect());
        let exponential = mean((0..n).map(|_| rng.exponential(2.0)).collect());
        let geometric = mean((0..n).map(|_| rng.geometric(1.5) as f64).collect());
        let binomial = mean((0..n).map(|_| rng.binomial(200, 0.1) as f64).collect());
        let unit = mean((0..n).map(|_| rng.unit()).collect());
        assert!((poisson_small - 3.0).abs() < 0.03, "{poisson_small}");
        assert!((poisson_large - 90.0).abs() < 0.2, "{poisson_large}");
        assert!((exponential - 2.0).abs() < 0.03, "{exponential}");
        assert!((geometric - 1.5).abs() < 0.02, "{geometric}");
        assert!((binomial - 20.0).abs() < 0.1, "{binomial}");
        assert!((unit - 0.5).abs() < 0.005, "{unit}");
        let below: Vec<u64> = (0..1000).map(|_| rng.below(3)).collect();
        assert!(below.iter().all(|v| *v < 3) && below.contains(&0) && below.contains(&2));
    }
}
