//! PDF writing and merging, with lopdf for the object model, object serialisation and
//! parsing.
//!
//! Every page becomes a *part*: a small, complete single-page PDF stored under
//! `{output}.parts/page-NNNN.pdf` (a raster page: one image XObject, DCT or Flate, drawn over
//! the whole MediaBox; a merged page: the source page and everything it references,
//! renumbered, inherited attributes made explicit). The final document is assembled by
//! [`Assembler`], which reads the parts one at a time and writes their objects straight to a
//! file with their offsets, then the page tree, the catalog and the xref table: memory holds
//! one part and an offset per object, never the whole document.
//!
//! Output is deterministic (no dates, no /ID, objects in a fixed order), so a resumed job that
//! reuses stored parts assembles a byte-identical document.

use crate::error::JobError;
use kiln_kernels::image::{self as img, Image, PixelKind};
use lopdf::{Dictionary, Document, Object, ObjectId, Stream, Writer};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Write;

/// How a raster page's pixels are compressed in the PDF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// JPEG (for pages with photographic layers), at this quality.
    Dct(u8),
    /// zlib, lossless (vector-only pages: rectangles and text).
    Flate,
}

fn pdf_err(what: &str, e: impl std::fmt::Display) -> JobError {
    JobError::internal(format!("pdf {what}: {e}"))
}

/// Writes objects to `W` keeping each one's offset, then the xref table and trailer.
struct ObjWriter<W: Write> {
    out: W,
    pos: u64,
    offsets: Vec<u64>,
}

impl<W: Write> ObjWriter<W> {
    fn new(out: W) -> Result<Self, JobError> {
        let mut w = ObjWriter { out, pos: 0, offsets: vec![0] };
        w.raw(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")?;
        Ok(w)
    }

    fn raw(&mut self, b: &[u8]) -> Result<(), JobError> {
        self.out.write_all(b).map_err(|e| pdf_err("write", e))?;
        self.pos += b.len() as u64;
        Ok(())
    }

    /// Reserves the next object number.
    fn alloc(&mut self) -> u32 {
        self.offsets.push(0);
        (self.offsets.len() - 1) as u32
    }

    fn object(&mut self, id: u32, obj: &Object) -> Result<(), JobError> {
        let mut body = Vec::new();
        Writer::write_object(&mut body, obj).map_err(|e| pdf_err("serialise", e))?;
        self.offsets[id as usize] = self.pos;
        self.raw(format!("{id} 0 obj\n").as_bytes())?;
        self.raw(&body)?;
        self.raw(b"\nendobj\n")
    }

    fn finish(mut self, root: u32) -> Result<W, JobError> {
        let xref = self.pos;
        let mut table = format!("xref\n0 {}\n0000000000 65535 f \n", self.offsets.len());
        for off in &self.offsets[1..] {
            table.push_str(&format!("{off:010} 00000 n \n"));
        }
        table.push_str(&format!("trailer\n<< /Size {} /Root {root} 0 R >>\nstartxref\n{xref}\n%%EOF\n", self.offsets.len()));
        self.raw(table.as_bytes())?;
        self.out.flush().map_err(|e| pdf_err("flush", e))?;
        Ok(self.out)
    }
}

fn real(v: f64) -> Object {
    Object::Real((v * 1000.0).round() as f32 / 1000.0)
}

/// A single-page PDF holding `image` drawn over a `size_pt` page.
pub fn raster_part(image: &Image, size_pt: (f64, f64), encoding: Encoding) -> Result<Vec<u8>, JobError> {
    let rgb;
    let image = match image.pixels {
        PixelKind::Rgb8 => image,
        PixelKind::Rgba8 => {
            rgb = img::flatten(image.clone(), [255, 255, 255]);
            &rgb
        }
    };
    let (filter, data) = match encoding {
        Encoding::Dct(q) => ("DCTDecode", img::jpeg::encode_rgb(image, q).map_err(|e| pdf_err("jpeg", e))?),
        Encoding::Flate => {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
            z.write_all(&image.data).map_err(|e| pdf_err("deflate", e))?;
            ("FlateDecode", z.finish().map_err(|e| pdf_err("deflate", e))?)
        }
    };
    let mut xobj = Dictionary::new();
    xobj.set("Type", Object::Name(b"XObject".to_vec()));
    xobj.set("Subtype", Object::Name(b"Image".to_vec()));
    xobj.set("Width", image.width as i64);
    xobj.set("Height", image.height as i64);
    xobj.set("ColorSpace", Object::Name(b"DeviceRGB".to_vec()));
    xobj.set("BitsPerComponent", 8i64);
    xobj.set("Filter", Object::Name(filter.as_bytes().to_vec()));
    let (w, h) = (real(size_pt.0), real(size_pt.1));
    let (Object::Real(wf), Object::Real(hf)) = (&w, &h) else { return Err(pdf_err("size", "not real")) };
    let content = format!("q {wf} 0 0 {hf} 0 0 cm /Im0 Do Q");

    let mut out = ObjWriter::new(Vec::new())?;
    let (catalog, pages, page, im, contents) = (out.alloc(), out.alloc(), out.alloc(), out.alloc(), out.alloc());
    out.object(catalog, &catalog_dict(pages))?;
    out.object(pages, &pages_dict(&[page]))?;
    let mut xobjects = Dictionary::new();
    xobjects.set("Im0", Object::Reference((im, 0)));
    let mut resources = Dictionary::new();
    resources.set("XObject", xobjects);
    let mut p = Dictionary::new();
    p.set("Type", Object::Name(b"Page".to_vec()));
    p.set("Parent", Object::Reference((pages, 0)));
    p.set("MediaBox", vec![Object::Integer(0), Object::Integer(0), w, h]);
    p.set("Resources", resources);
    p.set("Contents", Object::Reference((contents, 0)));
    out.object(page, &Object::Dictionary(p))?;
    out.object(im, &Object::Stream(Stream::new(xobj, data)))?;
    out.object(contents, &Object::Stream(Stream::new(Dictionary::new(), content.into_bytes())))?;
    out.finish(catalog)
}

fn catalog_dict(pages: u32) -> Object {
    let mut d = Dictionary::new();
    d.set("Type", Object::Name(b"Catalog".to_vec()));
    d.set("Pages", Object::Reference((pages, 0)));
    Object::Dictionary(d)
}

fn pages_dict(kids: &[u32]) -> Object {
    let mut d = Dictionary::new();
    d.set("Type", Object::Name(b"Pages".to_vec()));
    d.set("Kids", kids.iter().map(|k| Object::Reference((*k, 0))).collect::<Vec<_>>());
    d.set("Count", kids.len() as i64);
    Object::Dictionary(d)
}

/// Parses a PDF, mapping failures to `corrupt_input` (encrypted ones to `unsupported`).
pub fn load(data: &[u8], what: &str) -> Result<Document, JobError> {
    let doc = Document::load_mem(data).map_err(|e| JobError::corrupt(format!("{what}: not a readable PDF: {e}")))?;
    if doc.is_encrypted() {
        return Err(JobError::unsupported(format!("{what}: encrypted PDFs are not supported")));
    }
    Ok(doc)
}

/// Attributes a page inherits from its page-tree ancestors (PDF 32000 §7.7.3.4).
const INHERITED: [&[u8]; 4] = [b"Resources", b"MediaBox", b"CropBox", b"Rotate"];

/// A single-page PDF holding page `number` (1-based) of `doc`, with its inherited attributes
/// made explicit and every object it references. Returns the part and the page's size in
/// points (MediaBox width, height).
pub fn extract_part(doc: &Document, number: u32, what: &str) -> Result<(Vec<u8>, (f64, f64)), JobError> {
    let pages = doc.get_pages();
    let page_id = *pages.get(&number).ok_or_else(|| {
        JobError::invalid_spec(format!("{what}: page {number} asked for; the PDF has {} pages", pages.len()))
    })?;
    let corrupt = |e: lopdf::Error| JobError::corrupt(format!("{what}: page {number}: {e}"));
    let mut page = doc.get_dictionary(page_id).map_err(corrupt)?.clone();
    // Walk up the page tree for inherited attributes the page lacks.
    let mut parent = page.get(b"Parent").and_then(Object::as_reference).ok();
    let mut hops = 0;
    while let Some(pid) = parent {
        let Ok(pd) = doc.get_dictionary(pid) else { break };
        for key in INHERITED {
            if !page.has(key) {
                if let Ok(v) = pd.get(key) {
                    page.set(key.to_vec(), v.clone());
                }
            }
        }
        parent = pd.get(b"Parent").and_then(Object::as_reference).ok();
        hops += 1;
        if hops > 64 {
            return Err(JobError::corrupt(format!("{what}: page tree too deep or cyclic")));
        }
    }
    page.remove(b"Parent");
    let size = media_size(doc, &page).ok_or_else(|| JobError::corrupt(format!("{what}: page {number} has no valid MediaBox")))?;

    let mut out = ObjWriter::new(Vec::new())?;
    let (catalog, pages_id) = (out.alloc(), out.alloc());
    let deps: Vec<ObjectId> = reachable(doc, &Object::Dictionary(page.clone())).into_iter().filter(|id| *id != page_id).collect();
    let page_new = out.alloc();
    let mut map = BTreeMap::new();
    for id in &deps {
        map.insert(*id, out.alloc());
    }
    map.insert(page_id, page_new);
    out.object(catalog, &catalog_dict(pages_id))?;
    out.object(pages_id, &pages_dict(&[page_new]))?;
    page.set("Parent", Object::Reference((pages_id, 0)));
    out.object(page_new, &renumber(&Object::Dictionary(page), &map))?;
    for id in &deps {
        let obj = doc.get_object(*id).map_err(corrupt)?;
        out.object(map[id], &renumber(obj, &map))?;
    }
    Ok((out.finish(catalog)?, size))
}

fn media_size(doc: &Document, page: &Dictionary) -> Option<(f64, f64)> {
    let mb = page.get(b"MediaBox").ok()?;
    let (_, mb) = doc.dereference(mb).ok()?;
    let arr = mb.as_array().ok()?;
    let n: Vec<f64> = arr.iter().filter_map(|o| o.as_float().ok().map(f64::from).or_else(|| o.as_i64().ok().map(|v| v as f64))).collect();
    if n.len() != 4 {
        return None;
    }
    let (w, h) = ((n[2] - n[0]).abs(), (n[3] - n[1]).abs());
    (w > 0.0 && h > 0.0).then_some((w, h))
}

/// Every object reachable from `root` by reference, except through `/Parent` (which would
/// pull in the whole page tree), in ascending id order.
fn reachable(doc: &Document, root: &Object) -> Vec<ObjectId> {
    let mut seen = BTreeSet::new();
    let mut queue = VecDeque::new();
    refs(root, &mut queue);
    while let Some(id) = queue.pop_front() {
        if !seen.insert(id) {
            continue;
        }
        if let Ok(obj) = doc.get_object(id) {
            refs(obj, &mut queue);
        }
    }
    seen.retain(|id| doc.get_object(*id).is_ok());
    seen.into_iter().collect()
}

fn refs(obj: &Object, out: &mut VecDeque<ObjectId>) {
    match obj {
        Object::Reference(id) => out.push_back(*id),
        Object::Array(a) => a.iter().for_each(|o| refs(o, out)),
        Object::Dictionary(d) => dict_refs(d, out),
        Object::Stream(s) => dict_refs(&s.dict, out),
        _ => {}
    }
}

fn dict_refs(d: &Dictionary, out: &mut VecDeque<ObjectId>) {
    for (k, v) in d.iter() {
        if k.as_slice() != b"Parent" {
            refs(v, out);
        }
    }
}

/// `obj` with its references renumbered by `map` (references to objects outside the map,
/// such as a dropped `/Parent`, become `null`).
fn renumber(obj: &Object, map: &BTreeMap<ObjectId, u32>) -> Object {
    match obj {
        Object::Reference(id) => match map.get(id) {
            Some(n) => Object::Reference((*n, 0)),
            None => Object::Null,
        },
        Object::Array(a) => Object::Array(a.iter().map(|o| renumber(o, map)).collect()),
        Object::Dictionary(d) => Object::Dictionary(renumber_dict(d, map)),
        Object::Stream(s) => {
            let mut s2 = s.clone();
            s2.dict = renumber_dict(&s.dict, map);
            Object::Stream(s2)
        }
        o => o.clone(),
    }
}

fn renumber_dict(d: &Dictionary, map: &BTreeMap<ObjectId, u32>) -> Dictionary {
    let mut out = Dictionary::new();
    for (k, v) in d.iter() {
        out.set(k.clone(), renumber(v, map));
    }
    out
}

/// Writes the final document part by part.
pub struct Assembler<W: Write> {
    out: ObjWriter<W>,
    catalog: u32,
    pages: u32,
    kids: Vec<u32>,
}

impl<W: Write> Assembler<W> {
    pub fn new(out: W) -> Result<Self, JobError> {
        let mut out = ObjWriter::new(out)?;
        let (catalog, pages) = (out.alloc(), out.alloc());
        Ok(Assembler { out, catalog, pages, kids: Vec::new() })
    }

    /// Appends the page of a part (as written by [`raster_part`] or [`extract_part`]).
    pub fn add_part(&mut self, part: &[u8], what: &str) -> Result<(), JobError> {
        let doc = Document::load_mem(part).map_err(|e| JobError::internal(format!("{what}: stored part does not parse: {e}")))?;
        let page_id = *doc.get_pages().get(&1).ok_or_else(|| JobError::internal(format!("{what}: stored part has no page")))?;
        let page = doc.get_dictionary(page_id).map_err(|e| JobError::internal(format!("{what}: {e}")))?;
        let deps = reachable(&doc, &Object::Dictionary(page.clone()));
        let new_page = self.out.alloc();
        let mut map = BTreeMap::new();
        for id in deps.iter().filter(|id| **id != page_id) {
            map.insert(*id, self.out.alloc());
        }
        map.insert(page_id, new_page);
        let mut page = page.clone();
        page.set("Parent", Object::Reference((self.pages, 0)));
        self.out.object(new_page, &renumber(&Object::Dictionary(page), &map))?;
        for id in deps.iter().filter(|id| **id != page_id) {
            let obj = doc.get_object(*id).map_err(|e| JobError::internal(format!("{what}: {e}")))?;
            self.out.object(map[id], &renumber(obj, &map))?;
        }
        self.kids.push(new_page);
        Ok(())
    }

    /// Writes the page tree, catalog, xref and trailer; returns the writer.
    pub fn finish(mut self) -> Result<W, JobError> {
        self.out.object(self.pages, &pages_dict(&self.kids))?;
        self.out.object(self.catalog, &catalog_dict(self.pages))?;
        self.out.finish(self.catalog)
    }
}
