//! The blend arithmetic both backends run, on premultiplied 8-bit channels in integers so the
//! CPU and the WGSL shader (`gpu.wgsl`, the same formulas line for line) agree exactly.
//!
//! With source `s` (already scaled by the layer's opacity) and backdrop `b`, premultiplied,
//! alpha `αs`, `αb` (W3C Compositing, source-over with a separable blend function):
//! - normal:   `C = Cs + Cb·(1−αs)`
//! - multiply: `C = Cs·(1−αb) + Cb·(1−αs) + Cs·Cb`
//! - screen:   `C = Cs + Cb − Cs·Cb`
//! - alpha, all modes: `α = αs + αb − αs·αb`
//!
//! Colour channels are clamped to the result's alpha so the pixel stays premultiplied.

use super::BlendMode;

/// `round(a·b / 255)` for a, b in 0..=255, exact (the classic pixman form).
#[inline]
pub fn mul255(a: u32, b: u32) -> u32 {
    let t = a * b + 128;
    (t + (t >> 8)) >> 8
}

/// Scales a premultiplied pixel by an opacity 0..=255.
#[inline]
pub fn fade(px: u32, opacity: u32) -> u32 {
    if opacity == 255 {
        return px;
    }
    let c = |s: u32| mul255((px >> s) & 255, opacity) << s;
    c(0) | c(8) | c(16) | c(24)
}

/// Blends source pixel `s` (premultiplied, opacity applied) over backdrop `b`.
#[inline]
pub fn blend_px(s: u32, b: u32, mode: BlendMode) -> u32 {
    let sa = s >> 24;
    let ba = b >> 24;
    let a = (sa + ba - mul255(sa, ba)).min(255);
    let mut out = a << 24;
    for shift in [0u32, 8, 16] {
        let cs = (s >> shift) & 255;
        let cb = (b >> shift) & 255;
        let c = match mode {
            BlendMode::Normal => cs + mul255(cb, 255 - sa),
            BlendMode::Multiply => mul255(cs, 255 - ba) + mul255(cb, 255 - sa) + mul255(cs, cb),
            BlendMode::Screen => cs + cb - mul255(cs, cb),
        };
        out |= c.min(a) << shift;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn px(r: u32, g: u32, b: u32, a: u32) -> u32 {
        r | g << 8 | b << 16 | a << 24
    }

    #[test]
    fn mul255_is_exact_rounding() {
        for a in 0..=255u32 {
            for b in 0..=255u32 {
                let want = ((a * b) as f64 / 255.0).round() as u32;
                assert_eq!(mul255(a, b), want, "{a}*{b}");
            }
        }
    }

    #[test]
    fn blend_modes_match_hand_computed_values() {
        let white = px(255, 255, 255, 255);
        let grey = px(128, 128, 128, 255);
        let red = px(255, 0, 0, 255);
        // Opaque normal replaces.
        assert_eq!(blend_px(red, white, BlendMode::Normal), red);
        // Multiply red onto 50% grey: 255·128/255 = 128 in red, 0 elsewhere.
        assert_eq!(blend_px(red, grey, BlendMode::Multiply), px(128, 0, 0, 255));
        // Screen red onto grey: r = 255+128-128 = 255, g = b = 0+128-0 = 128.
        assert_eq!(blend_px(red, grey, BlendMode::Screen), px(255, 128, 128, 255));
        // Multiply by white is identity, screen with black is identity.
        assert_eq!(blend_px(grey, white, BlendMode::Multiply), grey);
        assert_eq!(blend_px(px(0, 0, 0, 255), grey, BlendMode::Screen), grey);
        // Half-transparent red (premultiplied 128,0,0,128) over white, normal:
        // r = 128 + 255·127/255 = 255, g = b = 0 + 127 = 127, a = 255.
        let half_red = px(128, 0, 0, 128);
        assert_eq!(blend_px(half_red, white, BlendMode::Normal), px(255, 127, 127, 255));
        // Multiply half red onto white: r = 128·0 + 255·127/255 + 128·255/255 = 255,
        // g = 0 + 127 + 0 = 127.
        assert_eq!(blend_px(half_red, white, BlendMode::Multiply), px(255, 127, 127, 255));
        // Over a transparent backdrop every mode yields the source.
        for m in [BlendMode::Normal, BlendMode::Multiply, BlendMode::Screen] {
            assert_eq!(blend_px(half_red, 0, m), half_red, "{m:?}");
        }
        // Opacity 50% on opaque blue: 0,0,128,128.
        assert_eq!(fade(px(0, 0, 255, 255), 128), px(0, 0, 128, 128));
    }

    #[test]
    fn results_stay_premultiplied() {
        let mut seed = 12345u32;
        let mut rnd = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for _ in 0..20000 {
            let (sa, ba) = (rnd() & 255, rnd() & 255);
            let p = |a: u32, r: &mut dyn FnMut() -> u32| px(r() % (a + 1), r() % (a + 1), r() % (a + 1), a);
            let s = p(sa, &mut rnd);
            let b = p(ba, &mut rnd);
            for m in [BlendMode::Normal, BlendMode::Multiply, BlendMode::Screen] {
                let o = blend_px(s, b, m);
                let a = o >> 24;
                assert!((o & 255) <= a && ((o >> 8) & 255) <= a && ((o >> 16) & 255) <= a, "{s:08x} {b:08x} {m:?}");
            }
        }
    }
}
