//! Three jobs before rustc runs:
//! 1. Generate the gRPC code for proto/ into OUT_DIR. protox parses the .proto files in Rust, so
//!    no system protoc is needed; the encoded descriptor set is kept for gRPC reflection.
//! 2. Link libtorch so that CUDA is really seen and the binary finds libtorch on its own:
//!    torch-sys hands us its lib dir (DEP_TCH_LIBTORCH_LIB, from its `links = "tch"`). We link
//!    `torch_cuda` with `--no-as-needed` (the linker would otherwise drop it, since no symbol of it
//!    is referenced, and `tch::Cuda::is_available()` would be false on a GPU) and bake in an rpath
//!    to that dir so `target/*/lote` runs without LD_LIBRARY_PATH.
//! 3. Compile csrc/*.cpp against that libtorch's headers (the wheel's include/, beside lib/):
//!    what tch does not wrap: oneDNN's linear operators (src/models/onednn.rs) and a seeded
//!    generator per request (src/generation/rng.rs).

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    generate_grpc_code()?;
    let lib_dir = link_libtorch();
    compile_shims(lib_dir.as_deref());
    Ok(())
}

fn generate_grpc_code() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/lote/v1/worker.proto",
        "proto/lote/v1/inference.proto",
        "proto/lote/v1/models.proto",
        "proto/lote/v1/jobs.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("lote_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}

/// Links libtorch as described above; returns its lib dir.
fn link_libtorch() -> Option<PathBuf> {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib_dir) = env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:warning=torch-sys gave no libtorch lib dir: no rpath, no torch_cuda");
        println!("cargo:rustc-env=LOTE_LIBTORCH_VERSION=unknown");
        return None;
    };
    let lib_dir = PathBuf::from(lib_dir);
    // The wheel's torch/version.py, beside lib/, names the version we build against.
    let version = std::fs::read_to_string(lib_dir.join("../version.py"))
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("__version__"))?.to_string();
            Some(line.split('=').nth(1)?.trim().trim_matches(['\'', '"']).to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=LOTE_LIBTORCH_VERSION={version}");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
    if lib_dir.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-L{}", lib_dir.display());
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    Some(lib_dir)
}

/// Builds the C++ shim with the flags torch-sys builds its own with (C++17, the wheel's C++11
/// ABI: every torch wheel since 2.7 is built with it).
fn compile_shims(lib_dir: Option<&std::path::Path>) {
    const SOURCES: [&str; 3] =
        ["csrc/shim.cpp", "csrc/onednn_linear.cpp", "csrc/seeded_generator.cpp"];
    println!("cargo:rerun-if-changed=csrc");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let include = lib_dir
        .map(|lib| lib.join("../include"))
        .expect("libtorch's lib dir (from torch-sys) to find its headers for csrc/");
    let abi = env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(&include)
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .files(SOURCES)
        .compile("lote_shims");
}
