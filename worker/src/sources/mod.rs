//! Where jobs come from: HTTP (`kiln serve`), files or stdin (`kiln run`), Kafka
//! (`kiln serve` with brokers), and the Lambda Runtime API (`kiln lambda`).

pub mod file;
pub mod http;
pub mod kafka;
pub mod lambda;
