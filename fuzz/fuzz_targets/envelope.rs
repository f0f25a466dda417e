//! Envelope and spec parsing: `Envelope::parse` on arbitrary bytes, then every kind's spec
//! parse and resolve (against default and tiny limits) on its `input`. Never panics; every
//! refusal is a JobError.
#![no_main]

use kiln_jobs::{infer, render, thumbnail, transcode, Envelope, Limits};
use libfuzzer_sys::fuzz_target;

fn specs(input: &serde_json::Value, limits: &Limits) {
    if let Ok(s) = thumbnail::ThumbnailSpec::parse(input) {
        let _ = s.resolve(limits);
    }
    if let Ok(s) = transcode::TranscodeSpec::parse(input) {
        if let Ok(r) = s.resolve(limits) {
            // The ladder plan for a few source heights and aspect ratios.
            for (h, aspect) in [(1080, 16.0 / 9.0), (1, 0.001), (u32::MAX, 1e9)] {
                let _ = transcode::plan_ladder(&r.ladder, h, aspect);
            }
        }
    }
    if let Ok(s) = render::RenderSpec::parse(input) {
        let _ = s.resolve(limits);
    }
    if let Ok(s) = infer::InferSpec::parse(input) {
        let models: Vec<infer::ModelConfig> =
            serde_json::from_value(serde_json::json!([{"name": "m", "uri": "file:///m.onnx", "task": "classify", "input_size": [8, 8]}]))
                .unwrap();
        let _ = s.resolve(&models, limits);
    }
}

fuzz_target!(|data: &[u8]| {
    let tiny = Limits { max_outputs: 2, max_pixels: 64, max_render_pages: 2, max_page_pixels: 100, max_layers_per_page: 2, ..Limits::default() };
    match Envelope::parse(data) {
        Ok(env) => {
            specs(&env.input, &Limits::default());
            specs(&env.input, &tiny);
        }
        Err(_) => {
            // Still try the bytes as a bare spec.
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
                specs(&v, &Limits::default());
            }
        }
    }
});
