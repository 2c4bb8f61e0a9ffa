//! Every fuzz target on its seed corpus, on seeded mutations of it, and on the
//! committed regression cases, as ordinary tests: CI runs these, and `cargo xtask
//! fuzz` runs the same targets under libFuzzer for as long as it is given.

use berth_fuzzing::{TARGETS, regressions, remove_scratch, seeds};
use rand::{Rng, SeedableRng};

/// Byte-level mutations as a fuzzer makes them: flips, random bytes, cuts, copies
/// and inserted boundary values.
fn mutate(seed: &[u8], rng: &mut impl Rng) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let n = v.len();
        match rng.random_range(0..6) {
            0 if n > 0 => {
                let i = rng.random_range(0..n);
                v[i] ^= 1 << rng.random_range(0..8);
            }
            1 if n > 0 => {
                let i = rng.random_range(0..n);
                v[i] = rng.random();
            }
            2 if n > 0 => v.truncate(rng.random_range(0..n)),
            3 if n > 1 => {
                let a = rng.random_range(0..n);
                let b = rng.random_range(a..n);
                let at = rng.random_range(0..=v.len());
                let piece = v[a..b].to_vec();
                v.splice(at..at, piece);
            }
            4 => {
                let at = rng.random_range(0..=n);
                let value: &[u8] = match rng.random_range(0..5) {
                    0 => &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
                    1 => &[0],
                    2 => b"\"",
                    3 => b"\n",
                    _ => &[0xC3],
                };
                v.splice(at..at, value.iter().copied());
            }
            _ => v.reverse(),
        }
    }
    v
}

#[test]
fn every_target_takes_the_regression_cases_its_seeds_and_their_mutations() {
    // Inputs that once crashed a target (fuzz/regressions/<target>/): no data needed.
    let mut ran = 0;
    for (name, target) in TARGETS {
        for (path, bytes) in regressions(name).expect("fuzz/regressions is readable") {
            eprintln!("{name}: regression {}", path.display());
            target(&bytes);
            ran += 1;
        }
    }
    assert!(ran > 0, "fuzz/regressions holds no cases");
    // The seeds come from the data directory: CI requires it, elsewhere this skips.
    if berth_testkit::data_dir().is_some() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20261202);
        for (name, target) in TARGETS {
            let corpus = seeds(name).unwrap_or_else(|e| {
                panic!("the seeds of '{name}' come from the data directory (BERTH_DATA_DIR, default ../shared/data): {e}")
            });
            assert!(!corpus.is_empty(), "'{name}' has no seeds");
            for s in &corpus {
                assert!(s.len() < 1 << 20, "a seed of '{name}' is over 1 MiB");
                target(s);
            }
            // A few hundred mutations each: a quick fuzz in CI, the same every run.
            for i in 0..300 {
                let m = mutate(&corpus[i % corpus.len()], &mut rng);
                target(&m);
            }
        }
    }
    remove_scratch();
}

#[test]
fn every_target_has_a_libfuzzer_entry_point() {
    let dir = berth_testkit::workspace_root().join("fuzz/fuzz_targets");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut names: Vec<String> = TARGETS.iter().map(|(n, _)| format!("{n}.rs")).collect();
    names.sort();
    assert_eq!(
        files, names,
        "fuzz/fuzz_targets and berth_fuzzing::TARGETS differ"
    );
}
