//! The Rust side of the C++ shims in csrc/ (what tch does not wrap): each call returns a new
//! libtorch object or null with an error string the shim malloc'd (csrc/shim.h); this turns
//! the pair into a `Result` and frees the string.

use std::ffi::{CStr, c_char};

use tch::Tensor;
use torch_sys::C_tensor;

unsafe extern "C" {
    fn lote_shim_free_error(error: *mut c_char);
}

/// The error text a failed shim call wrote, freed.
fn take_error(error: *mut c_char) -> String {
    if error.is_null() {
        return "no result and no error".to_string();
    }
    // SAFETY: the shim wrote a NUL-terminated string it malloc'd; freed right after the copy.
    let text = unsafe { CStr::from_ptr(error) }.to_string_lossy().into_owned();
    unsafe { lote_shim_free_error(error) };
    text
}

/// A shim call's object, or the message of the exception it caught.
pub fn take<T>(result: *mut T, error: *mut c_char) -> Result<*mut T, String> {
    if result.is_null() { Err(take_error(error)) } else { Ok(result) }
}

/// A shim call's tensor, or the message of the exception it caught.
pub fn take_tensor(result: *mut C_tensor, error: *mut c_char) -> Result<Tensor, String> {
    // SAFETY: a `new at::Tensor` the shim hands over, as tch's own calls do.
    take(result, error).map(|tensor| unsafe { Tensor::from_ptr(tensor) })
}
