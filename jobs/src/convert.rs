//! How the errors of the kernels and of the object store become [`JobError`]s, with their
//! DESIGN.md result codes: every such mapping lives here, as a `From<…> for JobError`.
//!
//! A kernel error does not know what it was working on; [`Context::context`] converts it and
//! puts that in front of the message (`source: corrupt image: …` is `"source"` + the error).

use crate::error::{ErrorCode, JobError};
use crate::store::StoreError;
use kiln_kernels::image::ImageError;
use kiln_kernels::render::RenderError;
use kiln_kernels::video::VideoError;

/// Image kernels: unsupported format → `unsupported`, bad data → `corrupt_input`, too many
/// pixels → `input_too_large`, our own failure → `internal`.
impl From<ImageError> for JobError {
    fn from(e: ImageError) -> JobError {
        match e {
            ImageError::Unsupported(m) => JobError::unsupported(m),
            ImageError::Corrupt(m) => JobError::corrupt(m),
            e @ ImageError::TooManyPixels { .. } => JobError::too_large(e.to_string()),
            ImageError::Internal(m) => JobError::internal(m),
        }
    }
}

/// Render kernels: `accel: gpu` without an adapter → `unsupported`, else `internal`.
impl From<RenderError> for JobError {
    fn from(e: RenderError) -> JobError {
        match e {
            RenderError::NoAdapter(m) => JobError::unsupported(format!("accel gpu: no GPU adapter for the wgpu compositor: {m}")),
            RenderError::Font(m) => JobError::internal(format!("font: {m}")),
            RenderError::Internal(m) => JobError::internal(m),
        }
    }
}

/// Video kernels: the source's faults name the source; a stop the caller asked for is `internal`
/// (the job's own cancel or store error is reported instead where there is one).
impl From<VideoError> for JobError {
    fn from(e: VideoError) -> JobError {
        match e {
            VideoError::Corrupt(m) => JobError::corrupt(format!("source: {m}")),
            VideoError::Unsupported(m) => JobError::unsupported(format!("source: {m}")),
            VideoError::TooLong(m) => JobError::too_large(format!("source: {m}")),
            VideoError::Stopped => JobError::internal("transcode stopped"),
            VideoError::Internal(m) => JobError::internal(m),
        }
    }
}

/// A store failure while reading a job's input (a source, a model).
#[derive(Debug)]
pub struct ReadingInput(pub StoreError);

/// A store failure while writing a job's output or result.
#[derive(Debug)]
pub struct WritingOutput(pub StoreError);

impl From<ReadingInput> for JobError {
    fn from(ReadingInput(e): ReadingInput) -> JobError {
        let code = match &e {
            StoreError::NotFound(_) => ErrorCode::InputNotFound,
            StoreError::TooLarge { .. } => ErrorCode::InputTooLarge,
            StoreError::UnsupportedUri(_) => ErrorCode::InvalidSpec,
            StoreError::Denied(_) => ErrorCode::InputNotFound,
            StoreError::Forbidden(_) => ErrorCode::Forbidden,
            _ => ErrorCode::Internal,
        };
        let retryable = e.is_retryable();
        JobError::new(code, e.to_string()).retryable(retryable)
    }
}

impl From<WritingOutput> for JobError {
    fn from(WritingOutput(e): WritingOutput) -> JobError {
        let code = match &e {
            StoreError::UnsupportedUri(_) => ErrorCode::InvalidSpec,
            StoreError::Forbidden(_) => ErrorCode::Forbidden,
            _ => ErrorCode::Internal,
        };
        let retryable = e.is_retryable();
        JobError::new(code, format!("writing output: {e}")).retryable(retryable)
    }
}

impl StoreError {
    /// The job error for a failure reading a job's input ([`ReadingInput`]).
    pub fn into_input_error(self) -> JobError {
        ReadingInput(self).into()
    }

    /// The job error for a failure writing a job's output ([`WritingOutput`]).
    pub fn into_output_error(self) -> JobError {
        WritingOutput(self).into()
    }
}

/// Converts a result's error into a [`JobError`] naming what failed.
pub trait Context<T> {
    /// The error as a [`JobError`] (same code and retryable flag) whose message starts with
    /// `{what}: `.
    fn context(self, what: &str) -> Result<T, JobError>;
}

impl<T, E> Context<T> for Result<T, E>
where
    JobError: From<E>,
{
    fn context(self, what: &str) -> Result<T, JobError> {
        self.map_err(|e| {
            let e = JobError::from(e);
            JobError { message: format!("{what}: {}", e.message), ..e }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use url::Url;

    fn fails<E>(e: E) -> Result<(), E> {
        Err(e)
    }

    #[test]
    fn image_errors_keep_their_codes_and_name_what_failed() {
        let cases = [
            (ImageError::Unsupported("HEIC".into()), ErrorCode::Unsupported, "source: HEIC"),
            (ImageError::Corrupt("truncated".into()), ErrorCode::CorruptInput, "source: truncated"),
            (ImageError::Internal("oom".into()), ErrorCode::Internal, "source: oom"),
            (
                ImageError::TooManyPixels { width: 10, height: 10, limit: 50 },
                ErrorCode::InputTooLarge,
                "source: image is 10x10 (100 pixels), over the limit of 50 pixels",
            ),
        ];
        for (e, code, message) in cases {
            let j = fails(e).context("source").unwrap_err();
            assert_eq!((j.code, j.message.as_str(), j.retryable), (code, message, false));
        }
    }

    #[test]
    fn kernel_errors_map_to_codes() {
        let e = JobError::from(RenderError::NoAdapter("none".into()));
        assert_eq!((e.code, e.message.as_str()), (ErrorCode::Unsupported, "accel gpu: no GPU adapter for the wgpu compositor: none"));
        assert_eq!(JobError::from(RenderError::Font("x".into())).message, "font: x");
        let e = JobError::from(VideoError::TooLong("3 h".into()));
        assert_eq!((e.code, e.message.as_str()), (ErrorCode::InputTooLarge, "source: 3 h"));
        assert_eq!(JobError::from(VideoError::Stopped).code, ErrorCode::Internal);
    }

    #[test]
    fn store_errors_map_to_codes() {
        let u = Url::parse("file:///nope").unwrap();
        let e = StoreError::io(&u, std::io::Error::from(std::io::ErrorKind::NotFound));
        assert_eq!(e.into_input_error().code, ErrorCode::InputNotFound);
        let e = StoreError::TooLarge { uri: "x".into(), limit: 1 };
        assert_eq!(e.into_input_error().code, ErrorCode::InputTooLarge);
        let e = StoreError::Unavailable("down".into()).into_input_error();
        assert!(e.retryable);
        let e = JobError::from(WritingOutput(StoreError::Unavailable("down".into())));
        assert_eq!((e.code, e.message.as_str(), e.retryable), (ErrorCode::Internal, "writing output: store unavailable: down", true));
    }
}
