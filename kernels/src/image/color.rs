//! Colour management: embedded ICC profiles converted to sRGB with qcms (pure Rust, SIMD).
//! Outputs are always sRGB and carry no profile.

use super::{Image, PixelKind};
use qcms::{DataType, Intent, Profile, Transform};
use std::sync::OnceLock;

/// sRGB as the output of every transform, with its output tables precomputed once.
fn srgb() -> &'static Profile {
    static SRGB: OnceLock<Box<Profile>> = OnceLock::new();
    SRGB.get_or_init(|| {
        let mut p = Profile::new_sRGB();
        p.precache_output_transform();
        p
    })
}

/// A conversion from an embedded RGB profile to sRGB. Built once per image, applied to as
/// many (resized) copies as needed.
pub struct SrgbTransform {
    rgb: Transform,
    rgba: Transform,
}

impl std::fmt::Debug for SrgbTransform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SrgbTransform")
    }
}

impl SrgbTransform {
    /// The transform for an ICC profile, or `None` when none is needed or possible: the
    /// profile is sRGB already, is not an RGB profile (grey, CMYK: handled at decode), or
    /// cannot be parsed (then the pixels are taken as sRGB, as browsers do).
    pub fn from_icc(icc: &[u8]) -> Option<SrgbTransform> {
        if icc.len() < 132 || &icc[16..20] != b"RGB " || is_srgb(icc) {
            return None;
        }
        let input = match Profile::new_from_slice(icc, false) {
            Some(p) => p,
            None => {
                tracing::debug!(bytes = icc.len(), "ignoring an ICC profile qcms cannot read");
                return None;
            }
        };
        let rgb = Transform::new(&input, srgb(), DataType::RGB8, Intent::Perceptual)?;
        let rgba = Transform::new(&input, srgb(), DataType::RGBA8, Intent::Perceptual)?;
        Some(SrgbTransform { rgb, rgba })
    }

    /// Converts the pixels in place (alpha is kept as it is).
    pub fn apply(&self, img: &mut Image) {
        let t = match img.pixels {
            PixelKind::Rgb8 => &self.rgb,
            PixelKind::Rgba8 => &self.rgba,
        };
        // Whole pixels only (qcms panics on a partial one; Image's invariant rules it out).
        let whole = img.data.len() - img.data.len() % img.channels();
        t.apply(&mut img.data[..whole]);
    }
}

/// Converts CMYK pixels (4 bytes each, 0 = no ink) to sRGB (3 bytes each) through a CMYK ICC
/// profile, with the relative colorimetric intent as libvips and most viewers use (qcms only
/// reads the perceptual table, so CMYK goes through moxcms). `false` when the profile is not a
/// usable CMYK one; `rgb` is then untouched.
pub fn cmyk_to_srgb(icc: &[u8], cmyk: &[u8], rgb: &mut [u8]) -> bool {
    use moxcms::{ColorProfile, DataColorSpace, Layout, RenderingIntent, TransformOptions};
    if icc.len() < 132 || &icc[16..20] != b"CMYK" || cmyk.len() / 4 != rgb.len() / 3 {
        return false;
    }
    let Ok(src) = ColorProfile::new_from_slice(icc) else { return false };
    if src.color_space != DataColorSpace::Cmyk {
        return false;
    }
    let opts = TransformOptions { rendering_intent: RenderingIntent::RelativeColorimetric, ..Default::default() };
    // CMYK 8-bit uses the RGBA layout (4 samples).
    let Ok(t) = src.create_transform_8bit(Layout::Rgba, &ColorProfile::new_srgb(), Layout::Rgb, opts) else {
        return false;
    };
    match t.transform(cmyk, rgb) {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(error = %e, "CMYK profile transform failed; converting naively");
            false
        }
    }
}

/// Whether a profile is sRGB, judged by its description tag ("sRGB IEC61966-2.1" and the
/// like), so the common case costs nothing. A profile that slips through is converted: sRGB
/// to sRGB changes nothing visible.
pub fn is_srgb(icc: &[u8]) -> bool {
    tag(icc, b"desc").is_some_and(|d| contains(d, b"sRGB") || contains(d, b"\0s\0R\0G\0B"))
}

fn tag<'a>(icc: &'a [u8], sig: &[u8; 4]) -> Option<&'a [u8]> {
    let be32 = |o: usize| icc.get(o..o + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let count = be32(128)?;
    (0..count.min(256)).find_map(|i| {
        let e = 132 + i * 12;
        if icc.get(e..e + 4)? != sig {
            return None;
        }
        let (off, len) = (be32(e + 4)?, be32(e + 8)?);
        icc.get(off..off.checked_add(len)?)
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Builds a minimal ICC v2 RGB matrix/TRC display profile (tests and warm-up).
pub fn rgb_profile(desc: &str, red: [f64; 3], green: [f64; 3], blue: [f64; 3], gamma: f64) -> Vec<u8> {
    let s15 = |v: f64| ((v * 65536.0).round() as i32).to_be_bytes();
    let xyz = |c: [f64; 3]| {
        let mut t = b"XYZ \0\0\0\0".to_vec();
        c.iter().for_each(|v| t.extend_from_slice(&s15(*v)));
        t
    };
    let mut curv = b"curv\0\0\0\0\0\0\0\x01".to_vec();
    curv.extend_from_slice(&((gamma * 256.0).round() as u16).to_be_bytes());
    curv.extend_from_slice(&[0, 0]);
    let mut desc_tag = b"desc\0\0\0\0".to_vec();
    desc_tag.extend_from_slice(&(desc.len() as u32 + 1).to_be_bytes());
    desc_tag.extend_from_slice(desc.as_bytes());
    desc_tag.push(0);
    desc_tag.extend_from_slice(&[0; 12 + 67]); // unicode + scriptcode parts, empty
    desc_tag.resize(desc_tag.len().div_ceil(4) * 4, 0);
    let d50 = [0.9642, 1.0, 0.8249];
    let tags: Vec<(&[u8; 4], Vec<u8>)> = vec![
        (b"desc", desc_tag),
        (b"wtpt", xyz(d50)),
        (b"rXYZ", xyz(red)),
        (b"gXYZ", xyz(green)),
        (b"bXYZ", xyz(blue)),
        (b"rTRC", curv.clone()),
        (b"gTRC", curv.clone()),
        (b"bTRC", curv),
    ];
    let table_len = 4 + 12 * tags.len();
    let mut body = Vec::new();
    let mut table = (tags.len() as u32).to_be_bytes().to_vec();
    for (sig, data) in &tags {
        let off = 128 + table_len + body.len();
        table.extend_from_slice(*sig);
        table.extend_from_slice(&(off as u32).to_be_bytes());
        table.extend_from_slice(&(data.len() as u32).to_be_bytes());
        body.extend_from_slice(data);
    }
    let total = 128 + table_len + body.len();
    let mut h = vec![0u8; 128];
    h[0..4].copy_from_slice(&(total as u32).to_be_bytes());
    h[8..12].copy_from_slice(&[2, 0x10, 0, 0]); // version 2.1
    h[12..16].copy_from_slice(b"mntr");
    h[16..20].copy_from_slice(b"RGB ");
    h[20..24].copy_from_slice(b"XYZ ");
    h[36..40].copy_from_slice(b"acsp");
    for (i, v) in d50.iter().enumerate() {
        h[68 + 4 * i..72 + 4 * i].copy_from_slice(&s15(*v));
    }
    h.extend_from_slice(&table);
    h.extend_from_slice(&body);
    h
}

/// Adobe RGB (1998)-like primaries, D50-adapted, gamma 2.2: a wide-gamut test profile.
pub fn adobe_rgb_like_profile() -> Vec<u8> {
    rgb_profile(
        "Test wide-gamut RGB",
        [0.6097, 0.3111, 0.0195],
        [0.2053, 0.6257, 0.0609],
        [0.1492, 0.0632, 0.7446],
        2.2,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wide_gamut_profile_changes_pixels_and_srgb_does_not_convert() {
        let icc = adobe_rgb_like_profile();
        assert!(!is_srgb(&icc));
        let t = SrgbTransform::from_icc(&icc).expect("transform");
        let mut img = Image::new(2, 1, PixelKind::Rgba8, vec![0, 200, 0, 255, 128, 128, 128, 77]).unwrap();
        t.apply(&mut img);
        // Saturated Adobe green is outside sRGB: red and blue stay ~0, green saturates.
        let green = img.rgba_at(0, 0);
        assert!(green[1] > 200, "{green:?}");
        assert_ne!(img.rgba_at(0, 0), [0, 200, 0, 255]);
        // Alpha is untouched; a mid grey stays (nearly) grey.
        let grey = img.rgba_at(1, 0);
        assert_eq!(grey[3], 77);
        assert!((grey[0] as i32 - grey[2] as i32).abs() <= 3, "{grey:?}");

        let srgb_named = rgb_profile("sRGB IEC61966-2.1", [0.4361, 0.2225, 0.0139], [0.3851, 0.7169, 0.0971], [0.1431, 0.0606, 0.7141], 2.2);
        assert!(is_srgb(&srgb_named));
        assert!(SrgbTransform::from_icc(&srgb_named).is_none());
    }

    #[test]
    fn garbage_profiles_are_ignored() {
        assert!(SrgbTransform::from_icc(b"").is_none());
        assert!(SrgbTransform::from_icc(&[0u8; 200]).is_none());
        let mut icc = adobe_rgb_like_profile();
        icc.truncate(140);
        assert!(SrgbTransform::from_icc(&icc).is_none());
        assert!(!cmyk_to_srgb(&[1u8; 300], &[0; 4], &mut [0; 3]));
    }
}
