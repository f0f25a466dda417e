//! The on-disk PTX cache: one file per (source, compute capability, hash of source text and
//! NVRTC options), so a restarted pod loads its kernels without compiling. Writes go to a
//! temporary file renamed into place (concurrent workers never read half a file); an empty or
//! unreadable entry is compiled again.

use super::{CudaError, Source, NVRTC_OPTIONS};
use std::path::{Path, PathBuf};

/// A folder of cached PTX.
#[derive(Debug, Clone)]
pub struct PtxCache {
    dir: PathBuf,
}

/// FNV-1a, 64 bits: a stable hash (std's hasher is not stable across releases).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl PtxCache {
    pub fn new(dir: impl Into<PathBuf>) -> PtxCache {
        PtxCache { dir: dir.into() }
    }

    /// `$XDG_CACHE_HOME/kiln/cuda`, else `$HOME/.cache/kiln/cuda`, else the temp folder's.
    pub fn default_dir() -> PathBuf {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir);
        base.join("kiln").join("cuda")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry's file for `src` compiled for compute capability `cc`.
    pub fn path(&self, src: &Source, cc: (i32, i32)) -> PathBuf {
        let opts = NVRTC_OPTIONS.join(" ");
        let h = fnv1a(&[src.text.as_bytes(), opts.as_bytes()]);
        self.dir.join(format!("{}-sm{}{}-{h:016x}.ptx", src.name, cc.0, cc.1))
    }

    /// The cached PTX, or `compile()`'s stored for next time; `true` when it came from disk.
    pub fn get_or_compile(
        &self,
        src: &Source,
        cc: (i32, i32),
        compile: impl FnOnce() -> Result<String, CudaError>,
    ) -> Result<(String, bool), CudaError> {
        let path = self.path(src, cc);
        if let Ok(ptx) = std::fs::read_to_string(&path) {
            if ptx.contains(".entry") {
                return Ok((ptx, true));
            }
        }
        let ptx = compile()?;
        let io = |source| CudaError::Cache { path: path.clone(), source };
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let tmp = self.dir.join(format!(".{}.{}.tmp", src.name, std::process::id()));
        std::fs::write(&tmp, &ptx).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        Ok((ptx, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::SOURCES;

    #[test]
    fn second_open_reads_disk_and_keys_separate_devices_and_sources() {
        let dir = std::env::temp_dir().join(format!("kiln-ptx-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let c = PtxCache::new(&dir);
        let src = SOURCES[0];
        let fake = || Ok::<_, CudaError>(".version 8.0\n.entry resize_h()".to_string());
        let (p, hit) = c.get_or_compile(&src, (9, 0), fake).unwrap();
        assert!(!hit && p.contains(".entry"));
        let (p2, hit) = c.get_or_compile(&src, (9, 0), || panic!("compiled again")).unwrap();
        assert!(hit && p2 == p);
        // Another compute capability or another source text is another entry.
        assert_ne!(c.path(&src, (9, 0)), c.path(&src, (8, 0)));
        let edited = Source { text: "// edited\n", ..src };
        assert_ne!(c.path(&src, (9, 0)), c.path(&edited, (9, 0)));
        // A truncated entry is compiled again; a compile error is passed on and stores nothing.
        std::fs::write(c.path(&src, (9, 0)), "").unwrap();
        let (_, hit) = c.get_or_compile(&src, (9, 0), fake).unwrap();
        assert!(!hit);
        let e = c.get_or_compile(&edited, (9, 0), || Err(CudaError::Compile { name: "resize", log: "boom".into() }));
        assert!(matches!(e, Err(CudaError::Compile { .. })) && !c.path(&edited, (9, 0)).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn default_dir_is_under_a_cache_folder() {
        assert!(PtxCache::default_dir().ends_with("kiln/cuda"));
    }
}
