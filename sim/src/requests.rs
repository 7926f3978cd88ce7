//! Small pieces the load generator and its floor server share: a seeded random stream and
//! the requests they build.

use stockgrid_api::proto::v1 as pb;

/// A xorshift64 stream: fast, seeded, the same sequence for the same seed.
pub(crate) struct Rng(u64);

impl Rng {
    /// A stream from `seed` (any value; zero is mapped away, xorshift would stay at zero).
    pub(crate) fn seeded(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `0..n` (0 if `n` is 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// An item-page lookup of one unit.
pub(crate) fn item_page_lookup(sku: u64, location: u32) -> pb::GetAvailabilityRequest {
    pb::GetAvailabilityRequest {
        sku,
        location,
        qty: 1,
        surface: pb::Surface::ItemPage as i32,
    }
}
