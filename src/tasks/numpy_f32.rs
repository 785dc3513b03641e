//! The two numpy float32 kernels the transformers pipelines' postprocessing runs through, ported so
//! that Rust reproduces their results bit for bit instead of "within rounding".
//!
//! transformers 4.57 computes its softmaxes with numpy on the model's float32 outputs
//! (`np.exp(x - x.max())`, `e / e.sum()`), and numpy 2.x:
//!
//! * evaluates `np.exp` on float32 arrays with its own SIMD kernel on x86-64 machines with AVX2+FMA3
//!   or AVX-512F (`simd_exp_FLOAT` in `numpy/_core/src/umath/loops_exponent_log.dispatch.c.src`):
//!   Cody-Waite range reduction, a rational approximation and a scale by 2^k. It is not correctly
//!   rounded (up to ~2.5 ulp away from the true value), so `f32::exp` (libm) gives different bits.
//!   The AVX2 and AVX-512 flavours agree element for element (both use FMA; their scaling steps are
//!   exact or round once); numpy builds without those features (e.g. aarch64) call libm instead.
//! * sums float32 arrays with pairwise summation in float32 (`@TYPE@_pairwise_sum` in
//!   `numpy/_core/src/umath/loops_utils.h.src`): below 8 elements a plain loop, up to 128 elements
//!   eight interleaved accumulators, beyond that a recursive split.

/// `NPY_LOG2Ef`.
const LOG2E: f32 = f32::from_bits(0x3FB8_AA3B);
/// `NPY_CODY_WAITE_LOGE_2_HIGHf` (-6.93145752e-1f): ln 2, high part, negated.
const CODY_WAITE_HIGH: f32 = f32::from_bits(0xBF31_7200);
/// `NPY_CODY_WAITE_LOGE_2_LOWf` (-1.42860677e-6f): ln 2, low part, negated.
const CODY_WAITE_LOW: f32 = f32::from_bits(0xB5BF_BE8E);
/// `NPY_RINT_CVT_MAGICf` (0x1.8p23): adding and subtracting it rounds to the nearest integer.
const RINT_MAGIC: f32 = f32::from_bits(0x4B40_0000);
/// `NPY_COEFF_P0_EXPf` .. `NPY_COEFF_P5_EXPf`: numerator of the rational approximation.
const EXP_P: [f32; 6] = [
    f32::from_bits(0x3F80_0000),
    f32::from_bits(0x3F39_CBD5),
    f32::from_bits(0x3E7D_4C58),
    f32::from_bits(0x3D51_7D8C),
    f32::from_bits(0x3BDD_7159),
    f32::from_bits(0x3A05_3DD8),
];
/// `NPY_COEFF_Q0_EXPf` .. `NPY_COEFF_Q2_EXPf`: denominator of the rational approximation.
const EXP_Q: [f32; 3] =
    [f32::from_bits(0x3F80_0000), f32::from_bits(0xBE8C_6857), f32::from_bits(0x3CB0_E832)];
/// At or above this the kernel returns +inf (88.72283935546875f).
const EXP_XMAX: f32 = 88.722_84;
/// At or below this the kernel returns 0 (-103.97208404541015625f).
const EXP_XMIN: f32 = -103.972_084;

/// `np.exp` of one float32, as numpy's AVX2 / AVX-512 kernel computes it.
pub fn exp(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    if x >= EXP_XMAX {
        return f32::INFINITY;
    }
    if x <= EXP_XMIN {
        return 0.0;
    }
    // quadrant = rint(x * log2(e)) by the magic-number trick.
    let quadrant = ((x * LOG2E) + RINT_MAGIC) - RINT_MAGIC;
    // Cody-Waite: r = x - quadrant * ln 2 in two fused steps (the kernel's third step adds
    // quadrant * 0, which can only turn a -0 into +0 and does not change the result).
    let r = quadrant.mul_add(CODY_WAITE_HIGH, x);
    let r = quadrant.mul_add(CODY_WAITE_LOW, r);
    // Horner with fused multiply-adds, p5 first, as the kernel does.
    let num = EXP_P[..5].iter().rev().fold(EXP_P[5], |acc, &p| acc.mul_add(r, p));
    let den = EXP_Q[2].mul_add(r, EXP_Q[1]).mul_add(r, EXP_Q[0]);
    scale_by_power_of_two(num / den, quadrant)
}

/// `poly * 2^quadrant`, rounded once (what `_mm512_scalef_ps` and the AVX2 emulation compute).
/// `quadrant` is an integer in [-150, 128] here and `poly` lies in [0.7, 1.5].
fn scale_by_power_of_two(poly: f32, quadrant: f32) -> f32 {
    let q = quadrant as i32;
    if q > 127 {
        // 2^128 is not an f32; the product itself is finite (x < xmax).
        (poly * 2.0) * pow2(q - 1)
    } else if q >= -125 {
        // Exact: the result is a normal number.
        poly * pow2(q)
    } else {
        // Subnormal result: scale to 2^-125 exactly, then divide by the remaining power of two,
        // which rounds once, as the AVX2 path does.
        (poly * pow2(-125)) / pow2(-125 - q)
    }
}

/// 2^q for q in [-126, 127], built from its bits.
fn pow2(q: i32) -> f32 {
    let biased = (q + 127).clamp(1, 254) as u32;
    f32::from_bits(biased << 23)
}

/// `np.sum` of a contiguous float32 array: the reduction starts from the identity `0.0` and adds
/// the pairwise sum of the elements, all in float32.
pub fn sum(values: &[f32]) -> f32 {
    0.0 + pairwise_sum(values)
}

/// numpy's pairwise summation of float32 values, accumulated in float32.
fn pairwise_sum(values: &[f32]) -> f32 {
    const BLOCK: usize = 128;
    let n = values.len();
    if n < 8 {
        // Starts from -0.0 so that a sum of negative zeros stays -0.0.
        values.iter().fold(-0.0, |acc, v| acc + v)
    } else if n <= BLOCK {
        let mut r = [0f32; 8];
        r.copy_from_slice(&values[..8]);
        let unrolled = n - n % 8;
        for chunk in values[8..unrolled].chunks_exact(8) {
            for (acc, v) in r.iter_mut().zip(chunk) {
                *acc += v;
            }
        }
        let head = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        values[unrolled..].iter().fold(head, |acc, v| acc + v)
    } else {
        let half = n / 2;
        let half = half - half % 8;
        pairwise_sum(&values[..half]) + pairwise_sum(&values[half..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_special_values() {
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-0.0), 1.0);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(EXP_XMAX), f32::INFINITY);
        assert_eq!(exp(EXP_XMIN), 0.0);
        assert_eq!(exp(-10000.0), 0.0);
    }

    /// Values numpy 2.4.6 (AVX-512) returned for `np.exp(np.float32(x))`.
    #[test]
    fn exp_matches_numpy_bits() {
        let cases: &[(u32, u32)] = &[
            (0x3F80_0000, 0x402D_F855), // exp(1)
            (0xBF80_0000, 0x3EBC_5AB1), // exp(-1)
            (0xC2C8_0000, 0x0000_001B), // exp(-100): subnormal
            (0xC2A0_0000, 0x05BF_ECBB), // exp(-80)
            (0x42A0_0000, 0x792A_BBCE), // exp(80)
            (0xBDCC_CCCD, 0x3F67_A36D), // exp(-0.1)
            (0x42B1_6666, 0x7F7A_37FD), // exp(88.7): quadrant 128
            (0xC2AF_0000, 0x006C_B2BC), // exp(-87.5): subnormal
            (0xC2CF_CCCD, 0x0000_0001), // exp(-103.9): smallest subnormal
        ];
        for &(x, want) in cases {
            let got = exp(f32::from_bits(x));
            assert_eq!(got.to_bits(), want, "exp({}) = {got:e}", f32::from_bits(x));
        }
    }

    #[test]
    fn pairwise_sum_orders() {
        assert_eq!(pairwise_sum(&[]).to_bits(), (-0.0f32).to_bits());
        assert_eq!(sum(&[]).to_bits(), 0.0f32.to_bits(), "np.sum of nothing is +0.0");
        assert_eq!(sum(&[-0.0]).to_bits(), 0.0f32.to_bits());
        assert_eq!(pairwise_sum(&[1.0, 2.0, 3.0]), 6.0);
        // 8 accumulators: 1e8 absorbs the ones it meets, the other accumulators keep theirs.
        let mut v = vec![1.0f32; 16];
        v[0] = 1e8;
        assert_eq!(pairwise_sum(&v), 100_000_008.0);
        let long: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5).collect();
        assert_eq!(pairwise_sum(&long), 249_750.0);
    }
}
