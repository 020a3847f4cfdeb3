//! The scenario's deterministic randomness: every choice is a hash of (seed, index, stream), so a
//! request or a fault instant is a pure function of the file, whatever order they are computed in.

/// SplitMix64 of (seed, index, stream): a deterministic, well-mixed 64-bit value.
pub fn mix(seed: u64, index: u64, stream: u64) -> u64 {
    let mut z = seed
        .wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform draw in [0, 1).
pub fn unit(seed: u64, index: u64, stream: u64) -> f64 {
    (mix(seed, index, stream) >> 11) as f64 / (1u64 << 53) as f64
}
