//! End-to-end tests of the Berth workspace live in `tests/*.rs` beside this file.
