//! A random generator per seeded generation. tch reaches only libtorch's process-wide default
//! generator, which every model thread draws from, so one seeded request's stream would move
//! with whatever else the process samples meanwhile. Each seeded search holds its own generator
//! instead (csrc/seeded_generator.cpp): a clone of its device's default generator seeded as
//! `torch.manual_seed(seed)` seeds that one, so it draws the very numbers transformers draws
//! after `set_seed(seed)`, whatever runs beside it.

use std::{ffi::c_char, ptr::NonNull};

use tch::{Device, Tensor};
use torch_sys::C_tensor;

use super::GenerateConfig;
use crate::shim::{take, take_tensor};

/// libtorch's `at::Generator`, opaque here.
#[repr(C)]
struct RawGenerator {
    _private: [u8; 0],
}

unsafe extern "C" {
    fn lote_generator_new(device: i32, seed: u64, error: *mut *mut c_char) -> *mut RawGenerator;
    fn lote_generator_free(generator: *mut RawGenerator);
    fn lote_generator_multinomial(
        generator: *mut RawGenerator,
        probs: *const C_tensor,
        samples: i64,
        error: *mut *mut c_char,
    ) -> *mut C_tensor;
}

/// A libtorch error from creating or drawing from a generator.
#[derive(Debug, thiserror::Error)]
#[error("seeded sampling: {0}")]
pub struct GeneratorError(String);

/// One seeded generation's own random stream.
#[derive(Debug)]
pub struct SeededGenerator {
    raw: NonNull<RawGenerator>,
}

// SAFETY: an at::Generator is a reference-counted pointer to an implementation whose draws
// lock its own mutex; this handle is its only owner and is used by one thread at a time.
unsafe impl Send for SeededGenerator {}

impl SeededGenerator {
    /// The generator `tch::manual_seed(seed)` would make of `device`'s default one.
    pub fn new(seed: u64, device: Device) -> Result<Self, GeneratorError> {
        let index = match device {
            Device::Cpu => -1,
            Device::Cuda(index) => index as i32,
            other => return Err(GeneratorError(format!("no seeded generator for {other:?}"))),
        };
        let mut error = std::ptr::null_mut();
        // SAFETY: plain values in; a new generator or an error out.
        let raw = unsafe { lote_generator_new(index, seed, &mut error) };
        let raw = take(raw, error).map_err(GeneratorError)?;
        Ok(Self { raw: NonNull::new(raw).expect("take checked for null") })
    }

    /// `probs.multinomial(samples, false)` drawn from this generator only.
    pub fn multinomial(&mut self, probs: &Tensor, samples: i64) -> Result<Tensor, GeneratorError> {
        let mut error = std::ptr::null_mut();
        // SAFETY: a live generator and tensor; the shim returns a new tensor or an error.
        let out = unsafe {
            lote_generator_multinomial(self.raw.as_ptr(), probs.as_ptr(), samples, &mut error)
        };
        take_tensor(out, error).map_err(GeneratorError)
    }
}

impl Drop for SeededGenerator {
    fn drop(&mut self) {
        // SAFETY: made by lote_generator_new, freed once.
        unsafe { lote_generator_free(self.raw.as_ptr()) }
    }
}

/// Where one search's random draws come from: its own generator when the call gave a seed,
/// libtorch's default one otherwise (as transformers without `set_seed`).
pub struct Draws(Option<SeededGenerator>);

impl Draws {
    /// Draws for a search on `device` under `config` (its seed counts only when it samples).
    /// libtorch failing to make a CPU or CUDA generator is a broken install; like a failing tch
    /// operator it panics, which the engine's guard reports.
    pub fn new(config: &GenerateConfig, device: Device) -> Self {
        let seed = config.seed.filter(|_| config.do_sample);
        Self(seed.map(|seed| SeededGenerator::new(seed, device).unwrap_or_else(|e| panic!("{e}"))))
    }

    /// `probs.multinomial(samples, false)`; a distribution libtorch refuses (NaN, too few
    /// tokens) panics as tch's own `multinomial` does.
    pub fn multinomial(&mut self, probs: &Tensor, samples: i64) -> Tensor {
        match &mut self.0 {
            Some(generator) => {
                generator.multinomial(probs, samples).unwrap_or_else(|e| panic!("{e}"))
            }
            None => probs.multinomial(samples, false),
        }
    }
}

/// Held by unit tests that seed or draw from libtorch's default generator, so that one test's
/// draws do not land between another's seeding and its draws.
#[cfg(test)]
pub(crate) fn hold_default_generator() -> std::sync::MutexGuard<'static, ()> {
    static DEFAULT_GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());
    DEFAULT_GENERATOR.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use tch::Kind;

    use super::*;

    fn probs(rows: i64, vocab: i64) -> Tensor {
        Tensor::rand([rows, vocab], (Kind::Float, Device::Cpu)).softmax(-1, Kind::Float)
    }

    #[test]
    fn draws_what_the_default_generator_draws_after_manual_seed() {
        let _rng = hold_default_generator();
        let inputs: Vec<(Tensor, i64)> =
            vec![(probs(1, 50), 1), (probs(4, 50), 1), (probs(3, 50), 5), (probs(2, 7), 7)];
        tch::manual_seed(1234);
        let expected: Vec<Tensor> = inputs.iter().map(|(p, n)| p.multinomial(*n, false)).collect();
        let mut own = SeededGenerator::new(1234, Device::Cpu).expect("a CPU generator");
        for ((p, n), expected) in inputs.iter().zip(&expected) {
            let _ = Tensor::rand([1000], (Kind::Float, Device::Cpu)); // others draw meanwhile
            let got = own.multinomial(p, *n).expect("a draw");
            assert!(got.equal(expected), "{got:?} != {expected:?}");
        }
    }

    #[test]
    fn two_generators_of_one_seed_draw_alike_and_leave_the_default_one_alone() {
        let _rng = hold_default_generator();
        let p = probs(6, 300);
        tch::manual_seed(9);
        let untouched = Tensor::rand([8], (Kind::Float, Device::Cpu));
        tch::manual_seed(9);
        let mut a = SeededGenerator::new(77, Device::Cpu).expect("a");
        let mut b = SeededGenerator::new(77, Device::Cpu).expect("b");
        let first = a.multinomial(&p, 3).expect("a draws");
        assert!(first.equal(&b.multinomial(&p, 3).expect("b draws")));
        assert!(!first.equal(&a.multinomial(&p, 3).expect("a draws again")));
        assert!(Tensor::rand([8], (Kind::Float, Device::Cpu)).equal(&untouched));
    }

    #[test]
    fn a_bad_distribution_is_an_error_not_an_abort() {
        let mut own = SeededGenerator::new(1, Device::Cpu).expect("a CPU generator");
        let nan = Tensor::from_slice(&[f32::NAN, 0.5]).unsqueeze(0);
        let error = own.multinomial(&nan, 1).expect_err("NaN is not a distribution");
        assert!(error.to_string().starts_with("seeded sampling: "), "{error}");
        let error = own.multinomial(&probs(1, 3), 4).expect_err("4 of 3 without replacement");
        assert!(error.to_string().starts_with("seeded sampling: "), "{error}");
    }
}
