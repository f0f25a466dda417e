//! How the errors of the kernels and of the object store become [`JobError`]s, with their
//! DESIGN.md result codes: every such mapping lives here.

use crate::error::JobError;
use kiln_kernels::image::ImageError;

/// Maps a kernel error onto the job error codes, naming what failed (`source`, `watermark`).
pub fn image_error(what: &str, e: ImageError) -> JobError {
    match e {
        ImageError::Unsupported(m) => JobError::unsupported(format!("{what}: {m}")),
        ImageError::Corrupt(m) => JobError::corrupt(format!("{what}: {m}")),
        e @ ImageError::TooManyPixels { .. } => JobError::too_large(format!("{what}: {e}")),
        ImageError::Internal(m) => JobError::internal(format!("{what}: {m}")),
    }
}
