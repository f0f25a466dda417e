//! Fonts in the PDF: the per-page placeholder a part carries, and the embedded, subset font
//! the assembled document gets once per font.
//!
//! Text is written with glyph ids as CIDs (`/Identity-H`, two bytes per glyph), so a page's
//! content stream never depends on which other pages exist. A part names its font with a
//! placeholder dictionary (`/KilnFont (sans)`, `/KilnGlyphs [gid (text) …]`: every glyph the
//! page draws and the characters it stands for); [`crate::render::pdf::Assembler`] gathers the
//! glyphs of every page and, at the end, writes one `Type0`/`CIDFontType2` font per font name:
//! the TrueType program subset by `subsetter` to exactly those glyphs (`FontFile2`, name
//! prefixed with a subset tag), a `CIDToGIDMap` from the original glyph ids to the subset's,
//! widths (`/W`) and a `ToUnicode` CMap so text extraction, search and copy work.

use super::{pdf_err, real, ObjWriter};
use crate::error::JobError;
use kiln_kernels::render::text::{self, FontInfo};
use lopdf::{Dictionary, Object, Stream};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;

pub const KILN_FONT: &[u8] = b"KilnFont";
pub const KILN_GLYPHS: &[u8] = b"KilnGlyphs";

/// A glyph's advance in PDF glyph space (thousandths of an em), as `/W` states it and as
/// the content stream's positioning assumes it. Rounded to 1/1000 so both agree exactly.
pub fn pdf_width(advance: u16, units_per_em: u16) -> f64 {
    ((advance as f64 * 1000.0 / units_per_em as f64) * 1000.0).round() / 1000.0
}

/// The placeholder font dictionary of a part: the font's name and the glyphs the page uses.
pub fn placeholder(name: &str, glyphs: &BTreeMap<u16, String>) -> Dictionary {
    let mut d = Dictionary::new();
    d.set("Type", Object::Name(b"Font".to_vec()));
    d.set("Subtype", Object::Name(b"Type0".to_vec()));
    d.set("Encoding", Object::Name(b"Identity-H".to_vec()));
    d.set(KILN_FONT, Object::string_literal(name));
    let mut list = Vec::with_capacity(glyphs.len() * 2);
    for (g, t) in glyphs {
        list.push(Object::Integer(*g as i64));
        list.push(Object::string_literal(t.as_bytes()));
    }
    d.set(KILN_GLYPHS, list);
    d
}

/// Reads a placeholder back: (font name, glyph → text). `None` for any other object.
pub fn read_placeholder(obj: &Object) -> Option<(String, Vec<(u16, String)>)> {
    let d = obj.as_dict().ok()?;
    let name = d.get(KILN_FONT).ok()?.as_str().ok()?;
    let name = String::from_utf8(name.to_vec()).ok()?;
    let list = d.get(KILN_GLYPHS).ok().and_then(|o| o.as_array().ok()).cloned().unwrap_or_default();
    let glyphs = list
        .chunks(2)
        .filter_map(|p| {
            let g = u16::try_from(p.first()?.as_i64().ok()?).ok()?;
            let t = String::from_utf8(p.get(1)?.as_str().ok()?.to_vec()).ok()?;
            Some((g, t))
        })
        .collect();
    Some((name, glyphs))
}

/// One font of the document: its object number and every glyph any page used.
#[derive(Debug)]
pub struct DocFont {
    pub name: String,
    pub id: u32,
    /// Original glyph id → the text it stands for (the first non-empty one seen).
    pub glyphs: BTreeMap<u16, String>,
}

impl DocFont {
    pub fn add(&mut self, glyphs: Vec<(u16, String)>) {
        for (g, t) in glyphs {
            let e = self.glyphs.entry(g).or_default();
            if e.is_empty() {
                *e = t;
            }
        }
    }
}

fn stream(dict: Dictionary, data: &[u8]) -> Result<Object, JobError> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
    z.write_all(data).map_err(|e| pdf_err("deflate", e))?;
    let mut dict = dict;
    dict.set("Filter", Object::Name(b"FlateDecode".to_vec()));
    Ok(Object::Stream(Stream::new(dict, z.finish().map_err(|e| pdf_err("deflate", e))?)))
}

/// A subset tag: six capitals from a hash of the font and its glyphs (deterministic).
fn tag(name: &str, glyphs: &BTreeMap<u16, String>) -> String {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    for g in glyphs.keys() {
        h.update(g.to_be_bytes());
    }
    h.finalize().iter().take(6).map(|b| (b'A' + b % 26) as char).collect()
}

/// The font program to embed and whether it is a subset: the subsetter's output, or the
/// whole font (glyph ids unchanged) when the subsetter cannot handle it.
fn subset_or_whole(name: &str, data: &[u8], remap: &subsetter::GlyphRemapper) -> (Vec<u8>, bool) {
    match subsetter::subset(data, 0, remap) {
        Ok(p) => (p, true),
        Err(e) => {
            tracing::warn!(font = %name, error = ?e, "font subsetting failed; embedding the whole font");
            (data.to_vec(), false)
        }
    }
}

/// Writes the embedded font for `font` under its object number (and five more objects).
pub(super) fn write<W: Write>(out: &mut ObjWriter<W>, font: &DocFont) -> Result<(), JobError> {
    let data = text::load_font(&font.name).map_err(|e| pdf_err("font", e))?;
    let info = text::font_info(&data).map_err(|e| pdf_err("font", e))?;
    if info.cff {
        return Err(JobError::unsupported(format!("font {}: CFF outlines cannot be embedded yet; use a TrueType font", font.name)));
    }
    let mut remap = subsetter::GlyphRemapper::new();
    for g in font.glyphs.keys() {
        remap.remap(*g);
    }
    let (program, subset) = subset_or_whole(&font.name, &data, &remap);
    let base = if subset { format!("{}+{}", tag(&font.name, &font.glyphs), info.postscript_name) } else { info.postscript_name.clone() };
    let (cid, desc, file, map, tounicode) = (out.alloc(), out.alloc(), out.alloc(), out.alloc(), out.alloc());

    let mut t0 = Dictionary::new();
    t0.set("Type", Object::Name(b"Font".to_vec()));
    t0.set("Subtype", Object::Name(b"Type0".to_vec()));
    t0.set("BaseFont", Object::Name(base.clone().into_bytes()));
    t0.set("Encoding", Object::Name(b"Identity-H".to_vec()));
    t0.set("DescendantFonts", vec![Object::Reference((cid, 0))]);
    t0.set("ToUnicode", Object::Reference((tounicode, 0)));
    out.object(font.id, &Object::Dictionary(t0))?;

    let mut c = Dictionary::new();
    c.set("Type", Object::Name(b"Font".to_vec()));
    c.set("Subtype", Object::Name(b"CIDFontType2".to_vec()));
    c.set("BaseFont", Object::Name(base.clone().into_bytes()));
    let mut si = Dictionary::new();
    si.set("Registry", Object::string_literal("Adobe"));
    si.set("Ordering", Object::string_literal("Identity"));
    si.set("Supplement", 0i64);
    c.set("CIDSystemInfo", si);
    c.set("FontDescriptor", Object::Reference((desc, 0)));
    c.set("DW", 0i64);
    c.set("W", widths(&info, font.glyphs.keys().copied()));
    c.set("CIDToGIDMap", Object::Reference((map, 0)));
    out.object(cid, &Object::Dictionary(c))?;

    let k = 1000.0 / info.units_per_em as f64;
    let mut d = Dictionary::new();
    d.set("Type", Object::Name(b"FontDescriptor".to_vec()));
    d.set("FontName", Object::Name(base.into_bytes()));
    // Symbolic (4): glyphs are addressed by id, not a standard encoding.
    let flags = 4 | if info.monospaced { 1 } else { 0 } | if info.serif { 2 } else { 0 } | if info.italic_angle != 0.0 { 64 } else { 0 };
    d.set("Flags", flags as i64);
    d.set("FontBBox", info.bbox.iter().map(|v| real(*v as f64 * k)).collect::<Vec<_>>());
    d.set("ItalicAngle", real(info.italic_angle as f64));
    d.set("Ascent", real(info.ascender as f64 * k));
    d.set("Descent", real(info.descender as f64 * k));
    d.set("CapHeight", real(info.cap_height as f64 * k));
    d.set("StemV", 80i64);
    d.set("FontFile2", Object::Reference((file, 0)));
    out.object(desc, &Object::Dictionary(d))?;

    let mut fd = Dictionary::new();
    fd.set("Length1", program.len() as i64);
    out.object(file, &stream(fd, &program)?)?;

    // CID (original glyph id) → glyph id in the embedded program.
    let max = font.glyphs.keys().next_back().copied().unwrap_or(0) as usize;
    let mut m = vec![0u8; (max + 1) * 2];
    for g in font.glyphs.keys() {
        let new = if subset { remap.get(*g).unwrap_or(0) } else { *g };
        m[*g as usize * 2..*g as usize * 2 + 2].copy_from_slice(&new.to_be_bytes());
    }
    out.object(map, &stream(Dictionary::new(), &m)?)?;
    out.object(tounicode, &stream(Dictionary::new(), to_unicode(&font.glyphs).as_bytes())?)?;
    Ok(())
}

/// `/W`: runs of consecutive glyph ids, `first [w w …]`.
fn widths(info: &FontInfo, glyphs: impl Iterator<Item = u16>) -> Vec<Object> {
    let mut out = Vec::new();
    let mut run: Vec<Object> = Vec::new();
    let mut first: Option<u16> = None;
    let mut last = 0u16;
    for g in glyphs {
        let w = pdf_width(info.advances.get(g as usize).copied().unwrap_or(0), info.units_per_em);
        if first.is_some() && g == last.wrapping_add(1) {
            run.push(real(w));
        } else {
            if let Some(f) = first {
                out.push(Object::Integer(f as i64));
                out.push(Object::Array(std::mem::take(&mut run)));
            }
            first = Some(g);
            run.push(real(w));
        }
        last = g;
    }
    if let Some(f) = first {
        out.push(Object::Integer(f as i64));
        out.push(Object::Array(run));
    }
    out
}

fn to_unicode(glyphs: &BTreeMap<u16, String>) -> String {
    let mut s = String::from(
        "/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n\
         /CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n\
         /CMapName /Adobe-Identity-UCS def\n/CMapType 2 def\n\
         1 begincodespacerange\n<0000> <FFFF>\nendcodespacerange\n",
    );
    let entries: Vec<_> = glyphs.iter().filter(|(_, t)| !t.is_empty()).collect();
    for chunk in entries.chunks(100) {
        s.push_str(&format!("{} beginbfchar\n", chunk.len()));
        for (g, t) in chunk {
            let hex: String = t.encode_utf16().map(|u| format!("{u:04X}")).collect();
            s.push_str(&format!("<{g:04X}> <{hex}>\n"));
        }
        s.push_str("endbfchar\n");
    }
    s.push_str("endcmap\nCMapName currentdict /CMap defineresource pop\nend\nend\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_group_consecutive_glyphs() {
        let info = FontInfo {
            postscript_name: "X".into(),
            units_per_em: 2048,
            ascender: 0,
            descender: 0,
            cap_height: 0,
            bbox: [0; 4],
            italic_angle: 0.0,
            monospaced: false,
            serif: false,
            cff: false,
            advances: vec![1024, 2048, 512, 0, 100],
        };
        let w = widths(&info, [0u16, 1, 2, 4].into_iter());
        assert_eq!(
            w,
            vec![
                Object::Integer(0),
                Object::Array(vec![real(500.0), real(1000.0), real(250.0)]),
                Object::Integer(4),
                Object::Array(vec![real(48.828)]),
            ]
        );
    }

    #[test]
    fn a_font_the_subsetter_refuses_is_embedded_whole() {
        let data = text::load_font("sans").unwrap();
        let mut remap = subsetter::GlyphRemapper::new();
        for g in [0u16, 3, 40] {
            remap.remap(g);
        }
        let (program, subset) = subset_or_whole("sans", &data, &remap);
        assert!(subset && program.len() < data.len() / 10, "{} of {} bytes", program.len(), data.len());
        // Its table directory cut short: the subsetter fails, the bytes go in as they are.
        let cut = &data[..200];
        assert_eq!(subset_or_whole("cut", cut, &remap), (cut.to_vec(), false));
    }

    #[test]
    fn placeholders_round_trip_and_tounicode_maps_ligatures() {
        let glyphs: BTreeMap<u16, String> = [(3, " ".to_owned()), (40, "fi".to_owned()), (41, String::new())].into();
        let (name, back) = read_placeholder(&Object::Dictionary(placeholder("serif", &glyphs))).unwrap();
        assert_eq!(name, "serif");
        assert_eq!(back, glyphs.clone().into_iter().collect::<Vec<_>>());
        let cmap = to_unicode(&glyphs);
        assert!(cmap.contains("2 beginbfchar\n<0003> <0020>\n<0028> <00660069>\n"), "{cmap}");
    }
}
