//! Where jobs come from: HTTP (`kiln serve`), files or stdin (`kiln run`), Kafka
//! (`kiln serve` with brokers), the Lambda Runtime API (`kiln lambda`), and signed thumbnail
//! URLs (`GET /v1/thumbnail/…`, `signed.rs`).

pub mod file;
pub mod http;
pub mod kafka;
pub mod lambda;
pub mod signed;
