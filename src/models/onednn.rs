//! oneDNN's fp32 linear layer on CPU, its weight packed once at load into oneDNN's blocked
//! layout: the kernel libtorch's own CPU compiler (torch.compile freezing) uses for linear
//! layers, and the library CTranslate2 uses on AMD CPUs.
//!
//! Measured on a 2-core AMD EPYC (AVX-512), 2 threads, over weights too large for the caches
//! as a decode step reads them (GPT-2, DistilBART and T5-small shapes): against MKL's
//! `(W x^T)^T` and `x W^T` it is 1.7-3.1x faster at 8 rows, 1.5-2.2x at 32, 1.4-1.9x at 128
//! and 1.2-1.5x at 512 rows; at 1 and 2 rows it is level for the layers' own weights (0.8-1.4x)
//! and behind for a 50k-word LM head (0.7-0.85x), which is why a tied head keeps its dense
//! weight for those rows (see [`super::layers::Linear`]). Results differ from MKL's by float
//! rounding only (about 1e-6 relative).
//!
//! The two operators live in libtorch's `mkldnn` namespace, which tch does not wrap; a few
//! lines of C++ (csrc/onednn_linear.cpp, built by build.rs) reach them through libtorch's
//! dispatcher.

use std::ffi::c_char;

use tch::Tensor;
use torch_sys::C_tensor;

use crate::shim::take_tensor;

unsafe extern "C" {
    fn lote_onednn_pack_linear(weight: *const C_tensor, error: *mut *mut c_char) -> *mut C_tensor;
    fn lote_onednn_linear(
        input: *const C_tensor,
        packed: *const C_tensor,
        bias: *const C_tensor,
        error: *mut *mut c_char,
    ) -> *mut C_tensor;
}

/// A libtorch error from one of the two operators.
#[derive(Debug, thiserror::Error)]
#[error("oneDNN linear: {0}")]
pub struct OneDnnError(String);

/// Takes the result of a shim call: the tensor, or the error it wrote.
fn take(result: *mut C_tensor, error: *mut c_char) -> Result<Tensor, OneDnnError> {
    take_tensor(result, error).map_err(OneDnnError)
}

/// A weight `[out, in]` in oneDNN's layout for [`linear`].
#[derive(Debug)]
pub struct PackedWeight {
    packed: Tensor,
}

impl PackedWeight {
    /// Packs an fp32 CPU weight `[out, in]`; fails where libtorch was built without oneDNN or
    /// the CPU lacks what its kernels need.
    pub fn pack(weight: &Tensor) -> Result<Self, OneDnnError> {
        let weight = weight.contiguous();
        let mut error = std::ptr::null_mut();
        // SAFETY: a live tensor; the shim reads it and returns a new one or an error.
        let packed = take(unsafe { lote_onednn_pack_linear(weight.as_ptr(), &mut error) }, error)?;
        let packed = Self { packed };
        // A product the kernel cannot run (a CPU oneDNN refuses) fails now, not in a request.
        let input = weight.size()[1];
        let _probe =
            packed.linear(&Tensor::zeros([1, input], (weight.kind(), weight.device())), None)?;
        Ok(packed)
    }

    /// `x W^T (+ bias)` for fp32 `x` `[..., in]`: a dense `[..., out]`.
    pub fn linear(&self, x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor, OneDnnError> {
        let x = x.contiguous();
        let bias = bias.map_or(std::ptr::null(), Tensor::as_ptr);
        let mut error = std::ptr::null_mut();
        // SAFETY: live tensors (the bias may be null, which the shim reads as none).
        let out = unsafe { lote_onednn_linear(x.as_ptr(), self.packed.as_ptr(), bias, &mut error) };
        take(out, error)
    }
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind};

    use super::*;

    #[test]
    fn packed_products_match_libtorch_linear_for_any_row_count() {
        let _rng = crate::generation::rng::hold_default_generator();
        tch::manual_seed(3);
        let weight = Tensor::randn([96, 80], (Kind::Float, Device::Cpu));
        let bias = Tensor::randn([96], (Kind::Float, Device::Cpu));
        let packed = PackedWeight::pack(&weight).expect("oneDNN is in libtorch's CPU build");
        for shape in [vec![1, 80], vec![2, 80], vec![7, 80], vec![3, 5, 80], vec![300, 80]] {
            let x = Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu));
            let expected = x.linear(&weight, Some(&bias));
            let got = packed.linear(&x, Some(&bias)).expect("a product");
            assert_eq!(got.size(), expected.size());
            let gap = (&got - &expected).abs().max().double_value(&[]);
            assert!(gap < 1e-4, "{shape:?}: {gap}");
            let unbiased = packed.linear(&x, None).expect("a product");
            let gap = (unbiased - x.linear::<Tensor>(&weight, None)).abs().max().double_value(&[]);
            assert!(gap < 1e-4, "{shape:?} without bias: {gap}");
        }
    }

    #[test]
    fn a_libtorch_error_comes_back_as_an_error_not_an_abort() {
        let _rng = crate::generation::rng::hold_default_generator();
        let weight = Tensor::randn([8, 4], (Kind::Float, Device::Cpu));
        let packed = PackedWeight::pack(&weight).expect("packs");
        let wrong = Tensor::randn([2, 5], (Kind::Float, Device::Cpu));
        let error = packed.linear(&wrong, None).expect_err("5 inputs against 4");
        assert!(error.to_string().starts_with("oneDNN linear: "), "{error}");
    }
}
