//! int8 linear layers: weights quantized once at load, symmetric per output channel (scales in
//! fp32), activations quantized per row at each call, the product in libtorch's int8 GEMM
//! (`_int_mm`: int8 x int8 -> int32), rescaled to fp32 with the row's and the channel's scales.
//!
//! This is the scheme CTranslate2 and ONNX Runtime's dynamic quantization use. Each row (token)
//! gets its own activation scale, so a row's output never depends on the rows batched with it:
//! a batch of mixed lengths gives what each input gives alone, as in fp32. A decode step reads a
//! quarter of the fp32 weight bytes, which is what bounds it.

use tch::{Kind, Tensor};

/// Largest magnitude of a symmetric int8 value (-127..=127; -128 is never used, so negation is
/// exact and the zero point is 0).
const QMAX: f64 = 127.0;

/// A weight `[out, in]` as int8 `[in, out]` (the layout `_int_mm` takes as its right operand)
/// and one fp32 scale per output channel.
#[derive(Debug)]
pub struct Int8Weight {
    /// `[in, out]`, int8.
    transposed: Tensor,
    /// `[out]`, fp32: channel `j`'s weights are `transposed[.., j] * scales[j]`.
    scales: Tensor,
}

impl Int8Weight {
    /// Quantizes an fp32 (or bf16/fp16) weight `[out, in]`, each output channel to its own
    /// absolute maximum.
    pub fn quantize(weight: &Tensor) -> Self {
        let _no_grad = tch::no_grad_guard();
        let weight = weight.to_kind(Kind::Float);
        let scales = channel_scales(&weight, 1);
        let quantized = (weight / scales.unsqueeze(1)).round().clamp(-QMAX, QMAX);
        Self { transposed: quantized.to_kind(Kind::Int8).tr().contiguous(), scales }
    }

    /// `x W^T` for `x` `[..., in]` in fp32; the result is fp32 `[..., out]`.
    pub fn matmul(&self, x: &Tensor) -> Tensor {
        let mut shape = x.size();
        let input = *shape.last().expect("a linear layer's input has dimensions");
        let rows = x.reshape([-1, input]).to_kind(Kind::Float);
        let row_scales = channel_scales(&rows, 1).unsqueeze(1);
        let quantized = (&rows / &row_scales).round_().clamp_(-QMAX, QMAX).to_kind(Kind::Int8);
        let product = quantized.internal_int_mm(&self.transposed).to_kind(Kind::Float);
        let out = product * row_scales * &self.scales;
        *shape.last_mut().expect("checked above") = self.scales.size()[0];
        out.view(shape.as_slice())
    }

    /// Bytes this weight occupies (int8 values and fp32 scales).
    pub fn bytes(&self) -> i64 {
        self.transposed.numel() as i64 + 4 * self.scales.numel() as i64
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
        tch::manual_seed(7);
        Tensor::randn(shape, (Kind::Float, Device::Cpu))
    }

    #[test]
    fn the_product_is_close_to_fp32_and_each_row_is_independent() {
        let weight = seeded(&[48, 64]) * 0.05;
        let x = seeded(&[5, 64]);
        let int8 = Int8Weight::quantize(&weight);
        let exact = x.matmul(&weight.tr());
        let approx = int8.matmul(&x);
        let error = (&approx - &exact).abs().max().double_value(&[]);
        let scale = exact.abs().max().double_value(&[]);
        assert!(error < 0.02 * scale, "max error {error} against max {scale}");
        // A row alone gives exactly what it gives beside others (and beside a zero row).
        let alone = int8.matmul(&x.narrow(0, 2, 1));
        assert!(alone.equal(&approx.narrow(0, 2, 1)));
        let padded = Tensor::cat(
            &[x.narrow(0, 2, 1), Tensor::zeros([1, 64], (Kind::Float, Device::Cpu))],
            0,
        );
        let with_zero = int8.matmul(&padded);
        assert!(with_zero.narrow(0, 0, 1).equal(&alone));
        assert_eq!(with_zero.narrow(0, 1, 1).abs().max().double_value(&[]), 0.0);
    }

    #[test]
    fn leading_dimensions_are_kept_and_weights_take_a_quarter_of_the_bytes() {
        let weight = seeded(&[16, 32]);
        let int8 = Int8Weight::quantize(&weight);
        let x = seeded(&[2, 3, 32]);
        assert_eq!(int8.matmul(&x).size(), [2, 3, 16]);
        assert_eq!(int8.bytes(), 16 * 32 + 4 * 16);
        // Values on the quantization grid come back exactly: a row whose largest magnitude is
        // 127 has scale 1, and the identity's channels have scale 1/127.
        let grid = Tensor::arange(32, (Kind::Float, Device::Cpu)).view([1, 32]) * 8.0 - 127.0;
        let unit = Int8Weight::quantize(&Tensor::eye(32, (Kind::Float, Device::Cpu)));
        assert!(unit.matmul(&grid).allclose(&grid, 1e-6, 1e-6, false));
    }
}
