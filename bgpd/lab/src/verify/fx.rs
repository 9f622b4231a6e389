//! A hash for the simulator's own keys (prefixes, addresses, small
//! numbers), looked up millions of times per design: a multiply-and-rotate
//! hash as rustc's FxHash. The default hash resists flooding by chosen
//! keys, which a design's own prefixes need not.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A map with the [`Fx`] hash.
pub type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<Fx>>;

/// The hasher.
#[derive(Default)]
pub struct Fx(u64);

impl Hasher for Fx {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u128(&mut self, n: u128) {
        self.write_u64(n as u64);
        self.write_u64((n >> 64) as u64);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::hash::{BuildHasher, BuildHasherDefault};

    use super::*;

    #[test]
    fn prefixes_that_differ_hash_apart() {
        let b = BuildHasherDefault::<Fx>::default();
        let mut seen = HashSet::new();
        for third in 0..=255u8 {
            for len in [24u8, 26, 32] {
                let p: ipnet::IpNet = format!("10.1.{third}.0/{len}").parse().unwrap();
                assert!(seen.insert(b.hash_one(p)), "{p} collides");
            }
        }
    }
}
