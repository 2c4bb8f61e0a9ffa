//! Compiles `crates/model/kernels/emulated.cpp` (every kernel, through `emu.h`) with
//! the host C++ compiler, twice: as written, and with the test-only index shift the
//! negative tests need (symbols suffixed `_shifted`).

fn main() {
    let kernels = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../model/kernels");
    println!("cargo:rerun-if-changed={}", kernels.display());
    for (lib, suffix, shift) in [
        ("berth_kernels_emu", "", "0"),
        ("berth_kernels_emu_shifted", "_shifted", "1"),
    ] {
        cc::Build::new()
            .cpp(true)
            .std("c++17")
            .file(kernels.join("emulated.cpp"))
            .include(&kernels)
            .define("BERTH_EMU_SUFFIX", suffix)
            .define("BERTH_INDEX_SHIFT", shift)
            .flag_if_supported("-O2")
            .warnings_into_errors(true)
            .compile(lib);
    }
}
