//! int8 matrix products for CPUs without VNNI, where libtorch's `_int_mm` falls back to a
//! scalar loop (measured on an AVX2-only AMD EPYC: 4.4 s for GPT-2's 49 linear layers at one
//! row, where fp32 takes 47 ms) and its other int8 kernels are slower than fp32
//! (`_weight_int8pack_mm` 3x, `_weight_int4pack_mm_for_cpu` more). libtorch's fbgemm kernels,
//! fast on AVX2, are not reachable through tch.
//!
//! The same arithmetic as [`super::int8`]'s `_int_mm` path, so both give the same numbers: rows
//! quantized symmetrically to their own absolute maximum, int8 x int8 products summed exactly
//! in int32, rescaled as `(sum * row scale) * channel scale`. On AVX2 the product of a row and
//! a weight row is `maddubs(|x|, sign(w, x))` (llama.cpp's trick): both sides lie in -127..=127,
//! so the pairs summed into 16 bits never saturate and the int32 sums are exact.
//!
//! Activations are quantized inside the call, so a linear layer is one pass over its input and
//! its weights. Output channels are split across the intra-op threads.

/// Inner dimensions are padded to a multiple of this (zeros), one AVX2 register of int8.
pub const K_BLOCK: usize = 32;

/// Largest magnitude of a symmetric int8 value.
const QMAX: f32 = 127.0;

/// `k` rounded up to [`K_BLOCK`].
pub fn padded(k: usize) -> usize {
    k.div_ceil(K_BLOCK) * K_BLOCK
}

/// Rows `x` `[m, k]` quantized into `quantized` `[m, padded(k)]` (the padding zero), each to
/// its own scale `amax / 127` (never 0), as [`super::int8`] computes them with tensors.
pub fn quantize_rows(x: &[f32], k: usize, quantized: &mut Vec<i8>, scales: &mut Vec<f32>) {
    let kp = padded(k);
    let m = x.len() / k;
    quantized.clear();
    quantized.resize(m * kp, 0);
    scales.clear();
    for (row, out) in x.chunks_exact(k).zip(quantized.chunks_exact_mut(kp)) {
        let amax = row.iter().fold(0f32, |a, v| a.max(v.abs()));
        let scale = amax.max(f32::MIN_POSITIVE) / QMAX;
        for (q, v) in out.iter_mut().zip(row) {
            *q = (v / scale).round_ties_even().clamp(-QMAX, QMAX) as i8;
        }
        scales.push(scale);
    }
}

/// A weight `[n, padded(k)]` in int8 with one scale per output channel.
pub struct Weight<'a> {
    pub values: &'a [i8],
    pub scales: &'a [f32],
    pub n: usize,
    pub kp: usize,
}

/// `out[i, j] = (sum_k xq[i, k] w[j, k] * row_scales[i]) * w.scales[j] (+ bias[j])` for
/// `m` rows, output `[m, n]` row-major.
pub fn matmul(
    xq: &[i8],
    row_scales: &[f32],
    w: &Weight,
    bias: Option<&[f32]>,
    threads: usize,
    out: &mut [f32],
) {
    let m = row_scales.len();
    assert_eq!(xq.len(), m * w.kp);
    assert_eq!(out.len(), m * w.n);
    // Columns in chunks per thread (a multiple of the kernel's width).
    let chunk = w.n.div_ceil(threads.max(1)).div_ceil(NR) * NR;
    let out_ptr = SharedOut(out.as_mut_ptr());
    let block = block_for_this_cpu();
    let work = |start: usize| {
        let end = (start + chunk).min(w.n);
        // SAFETY: each call writes only columns start..end of every row, disjoint per call.
        unsafe { columns(block, xq, row_scales, w, bias, start, end, &out_ptr) };
    };
    let starts: Vec<usize> = (0..w.n).step_by(chunk.max(1)).collect();
    if starts.len() <= 1 {
        starts.into_iter().for_each(work);
    } else {
        pool(threads).install(|| {
            use rayon::prelude::*;
            starts.into_par_iter().for_each(work);
        });
    }
}

/// The output's base pointer, shared by the threads that fill disjoint columns.
struct SharedOut(*mut f32);
// SAFETY: writers touch disjoint elements (see `matmul`).
unsafe impl Sync for SharedOut {}

/// A thread pool of `threads` threads, built once (rayon's global pool has one per core,
/// whatever `device.threads` says).
fn pool(threads: usize) -> &'static rayon::ThreadPool {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("lote-int8-{i}"))
            .build()
            .expect("a thread pool for int8 products")
    })
}

/// Rows per kernel call and output channels per kernel call.
const MR: usize = 4;
const NR: usize = 2;
/// Rows whose quantized values stay in cache while every column of a chunk passes over them.
const M_TILE: usize = 64;

/// # Safety
/// `out` points to `m * w.n` floats; no other thread writes columns `start..end`.
#[allow(clippy::too_many_arguments)]
unsafe fn columns(
    block: Block,
    xq: &[i8],
    row_scales: &[f32],
    w: &Weight,
    bias: Option<&[f32]>,
    start: usize,
    end: usize,
    out: &SharedOut,
) {
    let m = row_scales.len();
    let kp = w.kp;
    let mut sums = [[0i32; NR]; MR];
    for tile in (0..m).step_by(M_TILE) {
        let tile_end = (tile + M_TILE).min(m);
        for j in (start..end).step_by(NR) {
            let nr = NR.min(end - j);
            for i in (tile..tile_end).step_by(MR) {
                let mr = MR.min(tile_end - i);
                block(
                    &xq[i * kp..(i + mr) * kp],
                    &w.values[j * kp..(j + nr) * kp],
                    kp,
                    mr,
                    nr,
                    &mut sums,
                );
                for (r, row_sums) in sums.iter().enumerate().take(mr) {
                    for (c, &sum) in row_sums.iter().enumerate().take(nr) {
                        let col = j + c;
                        let mut value = (sum as f32 * row_scales[i + r]) * w.scales[col];
                        if let Some(bias) = bias {
                            value += bias[col];
                        }
                        // SAFETY: (i + r, col) is inside `out` and in this call's columns.
                        unsafe { *out.0.add((i + r) * w.n + col) = value };
                    }
                }
            }
        }
    }
}

/// Exact int32 dot products of `mr` rows of `x` with `nr` rows of `w`, each `kp` long.
type Block = fn(&[i8], &[i8], usize, usize, usize, &mut [[i32; NR]; MR]);

/// The AVX2 block where the CPU has it (chosen once per product, not per block), else the
/// portable one.
fn block_for_this_cpu() -> Block {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        return |x, w, kp, mr, nr, sums| {
            // SAFETY: AVX2 was detected; the slices hold `mr` and `nr` rows of `kp` values.
            unsafe { avx2::block(x, w, kp, mr, nr, sums) }
        };
    }
    portable_block
}

fn portable_block(x: &[i8], w: &[i8], kp: usize, mr: usize, nr: usize, sums: &mut [[i32; NR]; MR]) {
    for r in 0..mr {
        for c in 0..nr {
            let (xr, wr) = (&x[r * kp..(r + 1) * kp], &w[c * kp..(c + 1) * kp]);
            sums[r][c] = xr.iter().zip(wr).map(|(&a, &b)| i32::from(a) * i32::from(b)).sum();
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{K_BLOCK, MR, NR};

    /// # Safety
    /// Needs AVX2; `x` holds `mr` rows and `w` holds `nr` rows of `kp` (a multiple of 32).
    #[target_feature(enable = "avx2")]
    pub unsafe fn block(
        x: &[i8],
        w: &[i8],
        kp: usize,
        mr: usize,
        nr: usize,
        sums: &mut [[i32; NR]; MR],
    ) {
        match (mr, nr) {
            (4, 2) => unsafe { fixed::<4, 2>(x, w, kp, sums) },
            (1, 2) => unsafe { fixed::<1, 2>(x, w, kp, sums) },
            (2, 2) => unsafe { fixed::<2, 2>(x, w, kp, sums) },
            (3, 2) => unsafe { fixed::<3, 2>(x, w, kp, sums) },
            (4, 1) => unsafe { fixed::<4, 1>(x, w, kp, sums) },
            (3, 1) => unsafe { fixed::<3, 1>(x, w, kp, sums) },
            (2, 1) => unsafe { fixed::<2, 1>(x, w, kp, sums) },
            _ => unsafe { fixed::<1, 1>(x, w, kp, sums) },
        }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn fixed<const R: usize, const C: usize>(
        x: &[i8],
        w: &[i8],
        kp: usize,
        sums: &mut [[i32; NR]; MR],
    ) {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_si256(); C]; R];
        for k in (0..kp).step_by(K_BLOCK) {
            let mut weights = [_mm256_setzero_si256(); C];
            for (c, weight) in weights.iter_mut().enumerate() {
                // SAFETY: row c of `w` has `kp` values and k + 32 <= kp.
                *weight = unsafe { _mm256_loadu_si256(w.as_ptr().add(c * kp + k).cast()) };
            }
            for (r, row_acc) in acc.iter_mut().enumerate() {
                // SAFETY: as above, for `x`.
                let xv = unsafe { _mm256_loadu_si256(x.as_ptr().add(r * kp + k).cast()) };
                let magnitude = _mm256_sign_epi8(xv, xv);
                for (c, sum) in row_acc.iter_mut().enumerate() {
                    // |x| * (w * sign x) = x * w; pairs of products stay within 2 * 127 * 127.
                    let pairs = _mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(weights[c], xv));
                    *sum = _mm256_add_epi32(*sum, _mm256_madd_epi16(pairs, ones));
                }
            }
        }
        for (r, row_acc) in acc.iter().enumerate() {
            for (c, sum) in row_acc.iter().enumerate() {
                sums[r][c] = horizontal_sum(*sum);
            }
        }
    }

    #[target_feature(enable = "avx2")]
    fn horizontal_sum(v: __m256i) -> i32 {
        let halves = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let pairs = _mm_add_epi32(halves, _mm_shuffle_epi32(halves, 0b01_00_11_10));
        let total = _mm_add_epi32(pairs, _mm_shuffle_epi32(pairs, 0b10_11_00_01));
        _mm_cvtsi128_si32(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random sequence in -1..1.
    fn values(count: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..count)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn quantized_weight(n: usize, k: usize) -> (Vec<i8>, Vec<f32>) {
        let weights = values(n * k, 3);
        let mut q = Vec::new();
        let mut scales = Vec::new();
        quantize_rows(&weights, k, &mut q, &mut scales);
        (q, scales)
    }

    #[test]
    fn products_equal_the_exact_integer_sums_for_every_block_shape() {
        // 7 rows and 5 columns exercise every (rows, columns) remainder; 70 pads to 96.
        let (m, n, k) = (7, 5, 70);
        let (wq, ws) = quantized_weight(n, k);
        let x = values(m * k, 9);
        let (mut xq, mut xs) = (Vec::new(), Vec::new());
        quantize_rows(&x, k, &mut xq, &mut xs);
        let kp = padded(k);
        let bias: Vec<f32> = (0..n).map(|j| j as f32).collect();
        for threads in [1, 2, 3] {
            let mut out = vec![0f32; m * n];
            let weight = Weight { values: &wq, scales: &ws, n, kp };
            matmul(&xq, &xs, &weight, Some(&bias), threads, &mut out);
            for i in 0..m {
                for j in 0..n {
                    let sum: i32 = (0..kp)
                        .map(|t| i32::from(xq[i * kp + t]) * i32::from(wq[j * kp + t]))
                        .sum();
                    let expected = (sum as f32 * xs[i]) * ws[j] + bias[j];
                    assert_eq!(out[i * n + j], expected, "row {i} column {j}, {threads} threads");
                }
            }
        }
    }

    #[test]
    fn extreme_values_do_not_saturate() {
        // Every product is +-127 * 127: the 16-bit pair sums sit at their largest magnitude.
        let k = 64;
        let (plus, minus) = (vec![1.0f32; k], vec![-1.0f32; k]);
        for (row, weight, sign) in [(&plus, &plus, 1), (&minus, &minus, 1), (&plus, &minus, -1)] {
            let (mut xq, mut xs, mut wq, mut ws) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            quantize_rows(row, k, &mut xq, &mut xs);
            quantize_rows(weight, k, &mut wq, &mut ws);
            let weight = Weight { values: &wq, scales: &ws, n: 1, kp: padded(k) };
            let mut out = [0f32];
            matmul(&xq, &xs, &weight, None, 1, &mut out);
            assert_eq!(out[0], (sign * 127 * 127 * k as i32) as f32 * xs[0] * ws[0]);
        }
    }

    #[test]
    fn a_zero_row_has_a_positive_scale_and_gives_zeros() {
        let (mut xq, mut xs) = (Vec::new(), Vec::new());
        quantize_rows(&[0.0; 40], 40, &mut xq, &mut xs);
        assert!(xs[0] > 0.0);
        assert!(xq.iter().all(|&q| q == 0));
        assert_eq!(xq.len(), 64);
    }
}
