//! The targets link libtorch (through lote); an rpath to torch-sys's lib dir lets them run
//! without LD_LIBRARY_PATH, as lote's own build.rs does for its binaries.

fn main() {
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}
