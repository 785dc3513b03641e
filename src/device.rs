//! Turning the `device` settings into a libtorch device, and what the binary runs on.
//!
//! `auto` asks libtorch whether it sees CUDA; that answer is only right when the binary linked
//! `torch_cuda` (build.rs does). A device that is not there is a clear error at start, never a
//! panic deep inside the first model load.

use crate::settings::{DeviceSettings, DeviceSpec, Dtype};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceError {
    #[error(
        "device cuda:{index} is not available: libtorch sees {count} CUDA device(s){hint}",
        hint = if *count == 0 { "; use `device.kind = \"cpu\"` or `auto`" } else { "" }
    )]
    CudaUnavailable { index: usize, count: usize },
}

/// The device and dtype the models of this worker run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub device: tch::Device,
    pub dtype: Dtype,
}

impl Placement {
    /// Resolves the settings against what libtorch sees, and applies the CPU thread count.
    pub fn resolve(settings: &DeviceSettings) -> Result<Self, DeviceError> {
        let device = resolve_device(settings.kind, tch::Cuda::device_count() as usize)?;
        if settings.threads > 0 {
            tch::set_num_threads(settings.threads as i32);
        }
        Ok(Self { device, dtype: settings.dtype })
    }

    /// `cpu` or `cuda:N`, as in the settings.
    pub fn device_name(&self) -> String {
        device_name(self.device)
    }

    /// The same device with a model's own dtype, when it has one.
    pub fn with_dtype(self, dtype: Option<Dtype>) -> Self {
        Self { dtype: dtype.unwrap_or(self.dtype), ..self }
    }

    /// The floating point kind of weights and activations (int8 keeps everything but its
    /// linear layers' weights in fp32).
    pub fn kind(&self) -> tch::Kind {
        match self.dtype {
            Dtype::Fp32 | Dtype::Int8 => tch::Kind::Float,
            Dtype::Bf16 => tch::Kind::BFloat16,
            Dtype::Fp16 => tch::Kind::Half,
        }
    }

    /// Whether linear layers run in int8.
    pub fn int8_linears(&self) -> bool {
        self.dtype == Dtype::Int8
    }
}

/// Chooses the device for `spec` on a machine with `cuda_count` CUDA devices.
pub fn resolve_device(spec: DeviceSpec, cuda_count: usize) -> Result<tch::Device, DeviceError> {
    match spec {
        DeviceSpec::Auto if cuda_count > 0 => Ok(tch::Device::Cuda(0)),
        DeviceSpec::Auto | DeviceSpec::Cpu => Ok(tch::Device::Cpu),
        DeviceSpec::Cuda(index) if index < cuda_count => Ok(tch::Device::Cuda(index)),
        DeviceSpec::Cuda(index) => Err(DeviceError::CudaUnavailable { index, count: cuda_count }),
    }
}

pub fn device_name(device: tch::Device) -> String {
    match device {
        tch::Device::Cuda(index) => format!("cuda:{index}"),
        tch::Device::Cpu => "cpu".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// The version of the libtorch this process runs on, e.g. `2.11.0+cu130`.
///
/// Read from the `version.py` beside the loaded `libtorch_cpu.so` (the PyPI wheel's layout), so
/// it is right even when LD_LIBRARY_PATH points at another torch than the one built against;
/// falls back to the version seen at build time.
pub fn libtorch_version() -> String {
    loaded_libtorch_version().unwrap_or_else(|| env!("LOTE_LIBTORCH_VERSION").to_string())
}

fn loaded_libtorch_version() -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let library = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| path.ends_with("/libtorch_cpu.so"))?;
    let torch_dir = std::path::Path::new(library).parent()?.parent()?;
    let text = std::fs::read_to_string(torch_dir.join("version.py")).ok()?;
    parse_version_py(&text)
}

/// The `__version__ = '2.11.0+cu130'` line of torch's version.py.
fn parse_version_py(text: &str) -> Option<String> {
    let line = text.lines().find(|line| line.starts_with("__version__"))?;
    let value = line.split('=').nth(1)?.trim();
    Some(value.trim_matches(|c| c == '\'' || c == '"').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_prefers_cuda_zero_and_falls_back_to_cpu() {
        assert_eq!(resolve_device(DeviceSpec::Auto, 2), Ok(tch::Device::Cuda(0)));
        assert_eq!(resolve_device(DeviceSpec::Auto, 0), Ok(tch::Device::Cpu));
        assert_eq!(resolve_device(DeviceSpec::Cpu, 4), Ok(tch::Device::Cpu));
    }

    #[test]
    fn missing_cuda_device_is_an_error_not_a_panic() {
        assert_eq!(resolve_device(DeviceSpec::Cuda(1), 2), Ok(tch::Device::Cuda(1)));
        let error = resolve_device(DeviceSpec::Cuda(3), 0).unwrap_err();
        assert_eq!(error, DeviceError::CudaUnavailable { index: 3, count: 0 });
        assert_eq!(
            error.to_string(),
            "device cuda:3 is not available: libtorch sees 0 CUDA device(s); \
             use `device.kind = \"cpu\"` or `auto`"
        );
    }

    #[test]
    fn version_py_is_parsed() {
        let text = "__version__ = '2.11.0+cu130'\ndebug = False\n";
        assert_eq!(parse_version_py(text).as_deref(), Some("2.11.0+cu130"));
    }

    #[test]
    fn running_libtorch_version_is_found() {
        // Touch libtorch so that it is mapped, then read its version from beside it.
        let _ = tch::Cuda::device_count();
        assert!(libtorch_version().starts_with("2.11.0"), "{}", libtorch_version());
    }
}
