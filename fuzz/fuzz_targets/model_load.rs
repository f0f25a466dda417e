//! Model loading: `LoadedModel::load` (an ONNX Runtime session from the file's bytes, the
//! input checks, the batcher) on arbitrary bytes. Needs ONNX Runtime's library:
//! `KILN_FUZZ_ORT` (scripts/fuzz.sh points it at .tools/onnxruntime/). Never panics.
#![no_main]

use kiln_jobs::infer::batcher::BatchStats;
use kiln_jobs::infer::model::LoadedModel;
use kiln_jobs::infer::{InferConfig, ModelConfig};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};

fn setup() -> &'static (ModelConfig, InferConfig) {
    static S: OnceLock<(ModelConfig, InferConfig)> = OnceLock::new();
    S.get_or_init(|| {
        let m: ModelConfig = serde_json::from_value(serde_json::json!({"name": "fuzz", "uri": "file:///fuzz.onnx", "task": "tensor", "max_delay_ms": 0})).unwrap();
        let engine = InferConfig { ort_dylib: std::env::var("KILN_FUZZ_ORT").ok(), intra_threads: 1, ..InferConfig::default() };
        (m, engine)
    })
}

fuzz_target!(|data: &[u8]| {
    let (m, engine) = setup();
    let _ = LoadedModel::load(m, data, engine, false, Arc::new(BatchStats::default()));
});
