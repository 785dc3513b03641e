//! int8 linear layers: weights quantized once at load, symmetric per output channel (scales in
//! fp32), activations quantized per row at each call, the int8 products summed exactly in
//! int32 and rescaled to fp32 with the row's and the channel's scales.
//!
//! This is the scheme CTranslate2 and ONNX Runtime's dynamic quantization use. Each row (token)
//! gets its own activation scale, so a row's output never depends on the rows batched with it:
//! a batch of mixed lengths gives what each input gives alone, as in fp32. A decode step reads a
//! quarter of the fp32 weight bytes, which is what bounds it.
//!
//! Two kernels compute the same numbers: libtorch's `_int_mm` (oneDNN) on CPUs with VNNI, and
//! [`super::int8_gemm`] elsewhere, where `_int_mm` is a scalar loop.

use tch::{Kind, Tensor};

use super::int8_gemm;

/// Largest magnitude of a symmetric int8 value (-127..=127; -128 is never used, so negation is
/// exact and the zero point is 0).
const QMAX: f64 = 127.0;

/// Which int8 product runs on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// libtorch's `_int_mm`: oneDNN's VNNI kernels.
    IntMm,
    /// [`int8_gemm`]: AVX2 (or portable) code of our own.
    Own,
}

impl Kernel {
    /// `_int_mm` where the CPU has VNNI (measured 4.6x faster than fp32 at one row on an
    /// AVX-512 VNNI EPYC), ours elsewhere (`_int_mm` without VNNI: 90x slower than fp32).
    pub fn for_this_cpu() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512vnni")
            || std::arch::is_x86_feature_detected!("avxvnni")
        {
            return Kernel::IntMm;
        }
        Kernel::Own
    }
}

/// A weight `[out, in]` in int8 with one fp32 scale per output channel, laid out for its
/// kernel.
#[derive(Debug)]
pub struct Int8Weight {
    values: Values,
    input: i64,
    output: i64,
}

/// The int8 values and the fp32 scales (channel `j`'s weights are its int8 values times
/// `scales[j]`), in the form each kernel reads.
#[derive(Debug)]
enum Values {
    /// `[in, out]` int8, the layout `_int_mm` takes as its right operand; scales `[out]`.
    Transposed { values: Tensor, scales: Tensor },
    /// `[out, padded(in)]` row-major, for [`int8_gemm`].
    Rows { values: Vec<i8>, scales: Vec<f32> },
}

impl Int8Weight {
    /// Quantizes an fp32 (or bf16/fp16) weight `[out, in]`, each output channel to its own
    /// absolute maximum, for this CPU's kernel.
    pub fn quantize(weight: &Tensor) -> Self {
        Self::quantize_for(weight, Kernel::for_this_cpu())
    }

    pub fn quantize_for(weight: &Tensor, kernel: Kernel) -> Self {
        let _no_grad = tch::no_grad_guard();
        let weight = weight.to_kind(Kind::Float);
        let (out, input) = weight.size2().expect("a weight is [out, in]");
        let scales = channel_scales(&weight, 1);
        let quantized = (weight / scales.unsqueeze(1)).round().clamp(-QMAX, QMAX);
        let values = match kernel {
            Kernel::IntMm => Values::Transposed {
                values: quantized.to_kind(Kind::Int8).tr().contiguous(),
                scales,
            },
            Kernel::Own => {
                let kp = int8_gemm::padded(input as usize) as i64;
                let padded = quantized.constant_pad_nd([0, kp - input]).to_kind(Kind::Int8);
                let values = Vec::<i8>::try_from(padded.reshape([-1])).expect("int8 values");
                let scales = Vec::<f32>::try_from(&scales).expect("fp32 scales");
                debug_assert_eq!(values.len() as i64, out * kp);
                Values::Rows { values, scales }
            }
        };
        Self { values, input, output: out }
    }

    /// `x W^T (+ bias)` for `x` `[..., in]` in fp32; the result is fp32 `[..., out]`.
    pub fn matmul(&self, x: &Tensor, bias: Option<&Tensor>) -> Tensor {
        let mut shape = x.size();
        let input = *shape.last().expect("a linear layer's input has dimensions");
        let rows = x.reshape([-1, input]).to_kind(Kind::Float);
        let out = match &self.values {
            Values::Transposed { values, scales } => {
                let row_scales = channel_scales(&rows, 1).unsqueeze(1);
                let quantized =
                    (&rows / &row_scales).round_().clamp_(-QMAX, QMAX).to_kind(Kind::Int8);
                let product = quantized.internal_int_mm(values).to_kind(Kind::Float);
                let out = product * row_scales * scales;
                match bias {
                    Some(bias) => out + bias,
                    None => out,
                }
            }
            Values::Rows { values, scales } => self.own_matmul(&rows, values, scales, bias),
        };
        *shape.last_mut().expect("checked above") = self.output;
        out.view(shape.as_slice())
    }

    fn own_matmul(
        &self,
        rows: &Tensor,
        values: &[i8],
        scales: &[f32],
        bias: Option<&Tensor>,
    ) -> Tensor {
        let rows = rows.contiguous();
        let (m, k) = (rows.size()[0] as usize, self.input as usize);
        let n = scales.len();
        let bias = bias.map(|bias| bias.to_kind(Kind::Float).contiguous());
        // SAFETY: contiguous fp32 CPU tensors of the sizes read (int8 runs on CPU only).
        let x = unsafe { std::slice::from_raw_parts(rows.data_ptr() as *const f32, m * k) };
        let bias_values = bias
            .as_ref()
            .map(|b| unsafe { std::slice::from_raw_parts(b.data_ptr() as *const f32, n) });
        let (mut xq, mut xs) = (Vec::new(), Vec::new());
        int8_gemm::quantize_rows(x, k, &mut xq, &mut xs);
        let out = Tensor::empty([m as i64, n as i64], (Kind::Float, tch::Device::Cpu));
        // SAFETY: a fresh contiguous [m, n] fp32 tensor, written whole below.
        let out_values =
            unsafe { std::slice::from_raw_parts_mut(out.data_ptr() as *mut f32, m * n) };
        let weight = int8_gemm::Weight { values, scales, n, kp: int8_gemm::padded(k) };
        let threads = tch::get_num_threads().max(1) as usize;
        int8_gemm::matmul(&xq, &xs, &weight, bias_values, threads, out_values);
        out
    }

    /// Bytes this weight occupies: int8 values (with [`int8_gemm`]'s zero padding of the
    /// inner dimension, which a decode step reads too) and fp32 scales.
    pub fn bytes(&self) -> i64 {
        let values = match &self.values {
            Values::Transposed { values, .. } => values.numel() as i64,
            Values::Rows { values, .. } => values.len() as i64,
        };
        values + 4 * self.output
    }
}

/// Per-row (dim 1) or per-column scales `amax / 127`, never 0: an all-zero row (padding) then
/// quantizes to zeros instead of NaN.
fn channel_scales(x: &Tensor, dim: i64) -> Tensor {
    x.abs().amax([dim], false).clamp_min(f64::from(f32::MIN_POSITIVE)) / QMAX
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn seeded(shape: &[i64]) -> Tensor {
        let _rng = crate::generation::rng::hold_default_generator();
        tch::manual_seed(7);
        Tensor::randn(shape, (Kind::Float, Device::Cpu))
    }

    #[test]
    fn the_product_is_close_to_fp32_and_each_row_is_independent() {
        let weight = seeded(&[48, 64]) * 0.05;
        let x = seeded(&[5, 64]);
        let int8 = Int8Weight::quantize(&weight);
        let exact = x.matmul(&weight.tr());
        let approx = int8.matmul(&x, None);
        let error = (&approx - &exact).abs().max().double_value(&[]);
        let scale = exact.abs().max().double_value(&[]);
        assert!(error < 0.02 * scale, "max error {error} against max {scale}");
        // A row alone gives exactly what it gives beside others (and beside a zero row).
        let alone = int8.matmul(&x.narrow(0, 2, 1), None);
        assert!(alone.equal(&approx.narrow(0, 2, 1)));
        let padded = Tensor::cat(
            &[x.narrow(0, 2, 1), Tensor::zeros([1, 64], (Kind::Float, Device::Cpu))],
            0,
        );
        let with_zero = int8.matmul(&padded, None);
        assert!(with_zero.narrow(0, 0, 1).equal(&alone));
        assert_eq!(with_zero.narrow(0, 1, 1).abs().max().double_value(&[]), 0.0);
    }

    #[test]
    fn both_kernels_give_the_same_numbers() {
        // 100 inputs pad to 128 for our kernel; 70 rows span two of its row tiles and 37 outputs
        // leave remainders in its blocks.
        let weight = seeded(&[37, 100]) * 0.1;
        let bias = seeded(&[37]);
        let x = seeded(&[70, 100]) * 3.0;
        let ours = Int8Weight::quantize_for(&weight, Kernel::Own).matmul(&x, Some(&bias));
        let libtorch = Int8Weight::quantize_for(&weight, Kernel::IntMm).matmul(&x, Some(&bias));
        assert!(ours.equal(&libtorch), "max difference {}", (&ours - &libtorch).abs().max());
    }

    #[test]
    fn leading_dimensions_are_kept_and_weights_take_a_quarter_of_the_bytes() {
        let weight = seeded(&[16, 32]);
        let int8 = Int8Weight::quantize(&weight);
        let x = seeded(&[2, 3, 32]);
        assert_eq!(int8.matmul(&x, None).size(), [2, 3, 16]);
        assert_eq!(int8.bytes(), 16 * 32 + 4 * 16);
        // Values on the quantization grid come back exactly: a row whose largest magnitude is
        // 127 has scale 1, and the identity's channels have scale 1/127.
        let grid = Tensor::arange(32, (Kind::Float, Device::Cpu)).view([1, 32]) * 8.0 - 127.0;
        let unit = Int8Weight::quantize(&Tensor::eye(32, (Kind::Float, Device::Cpu)));
        assert!(unit.matmul(&grid, None).allclose(&grid, 1e-6, 1e-6, false));
    }
}
