//! The acceleration a job spec or the worker's configuration asks for: `auto`, `cpu` or `gpu`
//! (DESIGN.md). One type for every kind and the worker; what actually ran is each kernel's own
//! business (render's `Backend`, video's `ScaleEngine`, infer's ONNX Runtime device).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// `auto` | `cpu` | `gpu` (serde: lowercase; default `auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// The accelerator when one is usable, else the CPU.
    #[default]
    Auto,
    /// Never touch a GPU.
    Cpu,
    /// A GPU, or a clear failure without one.
    Gpu,
}

impl Accel {
    pub const ALL: [Accel; 3] = [Accel::Auto, Accel::Cpu, Accel::Gpu];

    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Auto => "auto",
            Accel::Cpu => "cpu",
            Accel::Gpu => "gpu",
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not `auto`, `cpu` or `gpu`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("accel {0:?}: expected auto, cpu or gpu")]
pub struct ParseAccelError(pub String);

impl FromStr for Accel {
    type Err = ParseAccelError;

    fn from_str(s: &str) -> Result<Accel, ParseAccelError> {
        Accel::ALL.into_iter().find(|a| a.as_str() == s).ok_or_else(|| ParseAccelError(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prints_and_serialises_the_same_three_words() {
        for a in Accel::ALL {
            assert_eq!(a.as_str().parse::<Accel>(), Ok(a));
            assert_eq!(a.to_string(), a.as_str());
            assert_eq!(serde_json::to_value(a).ok(), Some(serde_json::Value::from(a.as_str())));
        }
        assert_eq!(Accel::default(), Accel::Auto);
        let e = "tpu".parse::<Accel>().unwrap_err();
        assert_eq!(e.to_string(), "accel \"tpu\": expected auto, cpu or gpu");
        assert!(serde_json::from_value::<Accel>(serde_json::json!("GPU")).is_err());
    }
}
