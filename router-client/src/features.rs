//! Request features known at admission (seed §5, "Input features"), and the duration model
//! that predicts a job's run time from its spec.
//!
//! The model is linear per kind, `base_ms + per_unit_ms × units`, where the units are what
//! dominates that kind's cost:
//!
//! | kind      | unit                                                                 |
//! |-----------|----------------------------------------------------------------------|
//! | thumbnail | source megapixels (`source_pixels` or `source_width × source_height` in the spec; else payload bytes × `pixels_per_byte`) |
//! | transcode | video seconds × ladder rungs (`duration_s` in the spec; else payload bytes at `assumed_bitrate_kbps`) |
//! | render    | pages                                                                |
//! | infer     | images (or tensors)                                                  |
//! | other     | 1                                                                    |
//!
//! The prediction here is the uncorrected one; the closed loop ([`crate::closed_loop`])
//! keeps per tier and kind an observed/predicted ratio that scales it at decision time.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    #[default]
    Interactive,
    Batch,
}

/// What the router knows of a request before placing it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RequestFeatures {
    /// The envelope's `id` (empty when the envelope has none yet).
    pub job_id: String,
    pub kind: String,
    /// Predicted run time on one slot, from the spec (before the closed loop's correction).
    pub predicted_ms: f64,
    /// Input size, when known (the source's size, or the inline payload).
    pub payload_bytes: u64,
    /// Latency budget relative to receipt.
    pub deadline_ms: Option<u64>,
    pub needs_gpu: bool,
    pub tenant: Option<String>,
    pub priority: Priority,
    /// The model an infer job names (for warm-up hints and warm-set matching).
    pub model: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    #[error("job envelope is not a JSON object")]
    NotAnObject,
    #[error("job envelope has no string `kind`")]
    NoKind,
    #[error("job envelope field `{field}` is invalid: {why}")]
    Invalid { field: &'static str, why: &'static str },
}

/// Cost of one kind: `base_ms + per_unit_ms × units`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KindCost {
    pub base_ms: f64,
    pub per_unit_ms: f64,
    /// Units assumed when the spec gives nothing to count.
    #[serde(default = "one")]
    pub default_units: f64,
}

fn one() -> f64 {
    1.0
}

/// The per-kind duration model (part of the policy config, so it reloads with it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DurationModel {
    pub kinds: BTreeMap<String, KindCost>,
    /// For kinds not listed.
    pub other: KindCost,
    /// Thumbnail source pixels per payload byte, when the spec gives no size.
    pub pixels_per_byte: f64,
    /// Transcode source bitrate assumed when the spec gives no duration.
    pub assumed_bitrate_kbps: f64,
}

impl Default for DurationModel {
    fn default() -> Self {
        let mut kinds = BTreeMap::new();
        // Decode + resize of a 12 MP JPEG on one core is ~60 ms.
        kinds.insert("thumbnail".into(), KindCost { base_ms: 4.0, per_unit_ms: 5.0, default_units: 12.0 });
        // libx264 around 3x realtime per 1080p rung on one slot.
        kinds.insert("transcode".into(), KindCost { base_ms: 300.0, per_unit_ms: 330.0, default_units: 60.0 });
        kinds.insert("render".into(), KindCost { base_ms: 20.0, per_unit_ms: 45.0, default_units: 1.0 });
        kinds.insert("infer".into(), KindCost { base_ms: 8.0, per_unit_ms: 12.0, default_units: 1.0 });
        DurationModel {
            kinds,
            other: KindCost { base_ms: 50.0, per_unit_ms: 0.0, default_units: 1.0 },
            pixels_per_byte: 8.0,
            assumed_bitrate_kbps: 5000.0,
        }
    }
}

fn u64_field(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(|x| x.as_u64().or_else(|| x.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)))
}

fn f64_field(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64).filter(|f| f.is_finite() && *f >= 0.0)
}

fn array_len(v: &Value, key: &str) -> Option<usize> {
    v.get(key).and_then(Value::as_array).map(Vec::len)
}

impl DurationModel {
    pub fn cost(&self, kind: &str) -> KindCost {
        self.kinds.get(kind).copied().unwrap_or(self.other)
    }

    /// The cost units of a spec (the table in the module docs); None when the spec gives
    /// nothing to count, and the kind's `default_units` apply.
    pub fn units(&self, kind: &str, spec: &Value, payload_bytes: u64) -> Option<f64> {
        match kind {
            "thumbnail" => {
                let pixels = u64_field(spec, "source_pixels")
                    .or_else(|| u64_field(spec, "source_width")?.checked_mul(u64_field(spec, "source_height")?))
                    .map(|p| p as f64)
                    .or_else(|| (payload_bytes > 0).then_some(payload_bytes as f64 * self.pixels_per_byte))?;
                Some(pixels / 1e6)
            }
            "transcode" => {
                let seconds = ["duration_s", "duration_seconds", "source_seconds"]
                    .iter()
                    .find_map(|k| f64_field(spec, k))
                    .or_else(|| {
                        (payload_bytes > 0 && self.assumed_bitrate_kbps > 0.0)
                            .then(|| payload_bytes as f64 * 8.0 / (self.assumed_bitrate_kbps * 1000.0))
                    })?;
                let rungs = array_len(spec, "ladder").unwrap_or(1).max(1);
                Some(seconds * rungs as f64)
            }
            "render" => array_len(spec, "pages").filter(|n| *n > 0).map(|n| n as f64),
            "infer" => array_len(spec, "images")
                .filter(|n| *n > 0)
                .or_else(|| array_len(spec, "tensors").filter(|n| *n > 0))
                .map(|n| n as f64),
            _ => None,
        }
    }

    /// Predicted run time of a spec on one slot, in ms (finite, never negative).
    pub fn predict(&self, kind: &str, spec: &Value, payload_bytes: u64) -> f64 {
        let c = self.cost(kind);
        let units = self.units(kind, spec, payload_bytes).unwrap_or(c.default_units);
        let ms = c.base_ms + c.per_unit_ms * units;
        if ms.is_finite() && ms >= 0.0 {
            ms
        } else {
            c.base_ms.max(0.0)
        }
    }
}

impl RequestFeatures {
    /// Features of a job envelope (DESIGN.md, "The job envelope"): `id`, `kind`, `input`
    /// (the spec), `deadline_ms`, `priority`, and optionally `tenant` (which the router may
    /// also set from the caller's identity). `payload_bytes` is the input's size when the
    /// caller knows it (a HEAD on the source); otherwise `input.source_bytes` or
    /// `input.bytes` is used. `needs_gpu` is set when the spec asks for `"accel": "gpu"`.
    pub fn from_envelope(
        envelope: &Value,
        model: &DurationModel,
        payload_bytes: Option<u64>,
    ) -> Result<Self, FeatureError> {
        let obj = envelope.as_object().ok_or(FeatureError::NotAnObject)?;
        let kind = obj.get("kind").and_then(Value::as_str).ok_or(FeatureError::NoKind)?.to_owned();
        let null = Value::Null;
        let spec = obj.get("input").unwrap_or(&null);
        let payload_bytes =
            payload_bytes.or_else(|| u64_field(spec, "source_bytes")).or_else(|| u64_field(spec, "bytes")).unwrap_or(0);
        let deadline_ms = match obj.get("deadline_ms") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64().ok_or(FeatureError::Invalid { field: "deadline_ms", why: "not a non-negative integer" })?,
            ),
        };
        let priority = match obj.get("priority").and_then(Value::as_str) {
            None | Some("interactive") => Priority::Interactive,
            Some("batch") => Priority::Batch,
            Some(_) => return Err(FeatureError::Invalid { field: "priority", why: "not interactive or batch" }),
        };
        Ok(RequestFeatures {
            job_id: obj.get("id").and_then(Value::as_str).unwrap_or_default().to_owned(),
            predicted_ms: model.predict(&kind, spec, payload_bytes),
            kind,
            payload_bytes,
            deadline_ms,
            needs_gpu: spec.get("accel").and_then(Value::as_str) == Some("gpu"),
            tenant: obj.get("tenant").and_then(Value::as_str).map(str::to_owned),
            priority,
            model: spec.get("model").and_then(Value::as_str).map(str::to_owned),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn predicts_per_kind_from_the_spec() {
        let m = DurationModel::default();
        // 4000 x 3000 = 12 MP.
        let t = json!({"source": "s3://b/k.jpg", "source_width": 4000, "source_height": 3000});
        assert_eq!(m.predict("thumbnail", &t, 0), 4.0 + 5.0 * 12.0);
        // From bytes: 1.5 MB x 8 px/byte = 12 MP.
        assert_eq!(m.predict("thumbnail", &json!({"source": "x"}), 1_500_000), 64.0);
        let tr = json!({"duration_s": 10.0, "ladder": [{"height": 720}, {"height": 360}]});
        assert_eq!(m.predict("transcode", &tr, 0), 300.0 + 330.0 * 20.0);
        assert_eq!(m.predict("render", &json!({"pages": [{}, {}, {}]}), 0), 20.0 + 45.0 * 3.0);
        assert_eq!(m.predict("infer", &json!({"model": "d", "images": ["a", "b"]}), 0), 8.0 + 24.0);
        assert_eq!(m.predict("infer", &json!({"model": "d"}), 0), 20.0, "default units");
        assert_eq!(m.predict("mystery", &json!({}), 0), 50.0);
    }

    #[test]
    fn features_from_an_envelope() {
        let m = DurationModel::default();
        let env = json!({"id": "j1", "kind": "infer", "input": {"model": "detector", "images": ["a"], "accel": "gpu"},
                         "deadline_ms": 150, "priority": "batch", "tenant": "acme"});
        let f = RequestFeatures::from_envelope(&env, &m, Some(1234)).unwrap();
        assert_eq!(f.job_id, "j1");
        assert_eq!(f.kind, "infer");
        assert_eq!(f.predicted_ms, 20.0);
        assert_eq!(f.payload_bytes, 1234);
        assert_eq!(f.deadline_ms, Some(150));
        assert!(f.needs_gpu);
        assert_eq!(f.priority, Priority::Batch);
        assert_eq!(f.tenant.as_deref(), Some("acme"));
        assert_eq!(f.model.as_deref(), Some("detector"));

        assert!(matches!(RequestFeatures::from_envelope(&json!([1]), &m, None), Err(FeatureError::NotAnObject)));
        assert!(matches!(RequestFeatures::from_envelope(&json!({"id": "x"}), &m, None), Err(FeatureError::NoKind)));
        let bad = json!({"kind": "render", "priority": "urgent"});
        assert!(matches!(
            RequestFeatures::from_envelope(&bad, &m, None),
            Err(FeatureError::Invalid { field: "priority", .. })
        ));
        let bad = json!({"kind": "render", "deadline_ms": -5});
        assert!(matches!(
            RequestFeatures::from_envelope(&bad, &m, None),
            Err(FeatureError::Invalid { field: "deadline_ms", .. })
        ));
    }
}
