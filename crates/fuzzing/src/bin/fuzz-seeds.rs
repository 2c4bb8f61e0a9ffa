//! Writes every fuzz target's seed corpus (built from `../shared/data`) into
//! `<dir>/<target>/seed-<n>`, beside whatever a fuzzer has added there; `cargo xtask
//! fuzz` runs it before libFuzzer.

fn main() {
    let Some(dir) = std::env::args_os().nth(1).map(std::path::PathBuf::from) else {
        eprintln!("usage: fuzz-seeds <corpus-dir>");
        std::process::exit(2);
    };
    for (name, _) in berth_fuzzing::TARGETS {
        let seeds = berth_fuzzing::seeds(name).unwrap_or_else(|e| {
            eprintln!("fuzz-seeds: the seeds of '{name}': {e}");
            std::process::exit(1);
        });
        let target = dir.join(name);
        if let Err(e) = std::fs::create_dir_all(&target) {
            eprintln!("fuzz-seeds: {}: {e}", target.display());
            std::process::exit(1);
        }
        for (i, s) in seeds.iter().enumerate() {
            let path = target.join(format!("seed-{i}"));
            if let Err(e) = std::fs::write(&path, s) {
                eprintln!("fuzz-seeds: {}: {e}", path.display());
                std::process::exit(1);
            }
        }
        println!("{name}: {} seeds in {}", seeds.len(), target.display());
    }
}
