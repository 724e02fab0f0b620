//! A tiny deterministic PRNG (SplitMix64). No global state: each node owns one,
//! seeded from its configuration.

/// SplitMix64's step: the golden ratio in 64 bits.
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function (a bijection of `u64`).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// SplitMix64 (Steele, Lea, Flood 2014): fast, small, and good enough for
/// election jitter. Not for cryptography.
#[derive(Clone, Debug)]
pub(crate) struct Rng {
    state: u64,
}

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// The generator of node `id` in a cluster whose nodes may all share
    /// `seed`: any two ids get unrelated streams. (Starting at
    /// `seed ^ id * GAMMA` did not: with the step itself adding `GAMMA`,
    /// node `id + 1`'s stream was node `id`'s one draw later, and nodes
    /// sharing a seed timed out together.) The id and the seed each go
    /// through the output mix, a bijection, so distinct ids start at
    /// scattered points of the sequence, far apart.
    pub(crate) fn for_node(seed: u64, id: u64) -> Rng {
        Rng::new(mix(seed ^ mix(id.wrapping_add(GAMMA))))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix(self.state)
    }

    /// A value in `[lo, hi)`; `hi > lo`.
    pub(crate) fn range(&mut self, lo: u32, hi: u32) -> u32 {
        assert!(hi > lo, "empty range {lo}..{hi}");
        lo + (self.next_u64() % u64::from(hi - lo)) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn same_seed_gives_same_sequence() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn range_stays_in_bounds_and_covers_it() {
        let mut rng = Rng::new(7);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            let v = rng.range(10, 20);
            assert!((10..20).contains(&v));
            seen[(v - 10) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
