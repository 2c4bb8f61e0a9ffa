//! Fingerprints name cached datasets: a source's fingerprint hashes what it was read
//! from, a derived one hashes (parent, op name, op version, op parameters), as HF
//! `datasets` does, so the same pipeline finds its cache and a changed one does not.

use std::fmt;

use sha2::{Digest, Sha256};

/// A stable 128-bit hex digest identifying a dataset's content and lineage.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// The fingerprint of data read from outside: `kind` (e.g. "parquet") and the
    /// parts that pin its content (paths, sizes, mtimes, loader options).
    pub fn of_source(kind: &str, parts: &[&str]) -> Self {
        Self::hash(&[&["source", kind], parts].concat())
    }

    /// The fingerprint of the result of applying an operation to this dataset.
    pub fn derive(&self, op: &str, version: u32, params: &str) -> Self {
        Self::hash(&["derive", &self.0, op, &version.to_string(), params])
    }

    /// The hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn hash(parts: &[&str]) -> Self {
        let mut h = Sha256::new();
        for p in parts {
            // Length-prefix each part so ("ab","c") and ("a","bc") differ.
            h.update((p.len() as u64).to_le_bytes());
            h.update(p.as_bytes());
        }
        Fingerprint(hex::encode(&h.finalize()[..16]))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_fingerprint_changes_with_each_input() {
        let a = Fingerprint::of_source("parquet", &["/x.parquet", "100"]);
        let base = a.derive("tokenize", 1, "max_length=128");
        assert_eq!(base, a.derive("tokenize", 1, "max_length=128"));
        assert_ne!(base, a.derive("tokenize", 1, "max_length=64"));
        assert_ne!(base, a.derive("tokenize", 2, "max_length=128"));
        assert_ne!(base, a.derive("chunk", 1, "max_length=128"));
        let b = Fingerprint::of_source("parquet", &["/y.parquet", "100"]);
        assert_ne!(base, b.derive("tokenize", 1, "max_length=128"));
    }

    #[test]
    fn parts_are_length_prefixed() {
        assert_ne!(
            Fingerprint::of_source("k", &["ab", "c"]),
            Fingerprint::of_source("k", &["a", "bc"])
        );
    }
}
