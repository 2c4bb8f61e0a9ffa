//! Criterion benches of the preprocessing path live in `benches/*.rs` beside this file.
