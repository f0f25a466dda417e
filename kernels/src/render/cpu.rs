//! The CPU reference compositor: the blend loop of [`super::blend`] over each source's
//! clipped rectangle, in layer order.

use super::blend::{blend_px, fade};
use super::{premultiply, Backend, Compositor, PageLayers, RenderError};

pub struct CpuCompositor;

impl Compositor for CpuCompositor {
    fn backend(&self) -> Backend {
        Backend::Cpu
    }

    fn composite(&self, page: &PageLayers) -> Result<Vec<u32>, RenderError> {
        let (w, h) = (page.width as usize, page.height as usize);
        let n = w.checked_mul(h).ok_or_else(|| RenderError::Internal("page size overflows".into()))?;
        let mut canvas = vec![premultiply(page.background); n];
        for s in &page.sources {
            if s.pixels.len() != s.width as usize * s.height as usize {
                return Err(RenderError::Internal(format!("{s:?} has {} pixels", s.pixels.len())));
            }
            let Some((px, py, tx, ty, cw, ch)) = s.clip((page.width, page.height)) else { continue };
            let op = s.opacity as u32;
            for row in 0..ch as usize {
                let dst = &mut canvas[(py as usize + row) * w + px as usize..][..cw as usize];
                let src = &s.pixels[(ty as usize + row) * s.width as usize + tx as usize..][..cw as usize];
                for (d, &sp) in dst.iter_mut().zip(src) {
                    if sp == 0 {
                        continue;
                    }
                    *d = blend_px(fade(sp, op), *d, s.blend);
                }
            }
        }
        Ok(canvas)
    }
}
