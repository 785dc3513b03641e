//! The gRPC surface: code generated from proto/ (build.rs writes it to OUT_DIR) and the service
//! implementations, each in its own module; [`status`] is the one place errors become statuses.

mod inference;
mod jobs;
mod models;
pub mod status;
mod worker;

pub use inference::InferenceService;
pub use jobs::JobsService;
pub use models::ModelsService;
pub use worker::WorkerService;

/// Messages and service stubs of package `lote.v1`.
pub mod pb {
    #![allow(clippy::derive_partial_eq_without_eq)]
    tonic::include_proto!("lote.v1");

    /// Encoded descriptors of every lote.v1 file, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/lote_descriptor.bin"));
}
