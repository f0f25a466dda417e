//! Shared helpers of the benchmarks, and the hybrid simulator (`sim`, issue 18).

pub mod sim;
