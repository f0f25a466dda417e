//! PDF writing and merging, with lopdf for the object model, object serialisation and
//! parsing.
//!
//! Every page becomes a *part*: a small single-page PDF stored under
//! `{output}.parts/page-NNNN.pdf`. A drawn page is written as vectors ([`vector_part`]: a
//! content stream of paths, text and image placements, its images as XObjects and its fonts
//! as placeholders, see [`font`]); a merged page is the source page and everything it
//! references, renumbered, inherited attributes made explicit ([`extract_part`]). The final
//! document is assembled by [`Assembler`] (`assemble.rs`), which reads the parts one at a
//! time and writes their objects straight to a file with their offsets, writing an object
//! that another part already wrote (the same photo, the same font program of a merged
//! source) only once, then the embedded subset fonts, the page tree, the catalog and the
//! xref table: memory holds one part, an offset and a content hash per object and the glyph
//! sets of the fonts, never the whole document.
//!
//! Output is deterministic (no dates, no /ID, objects in a fixed order), so a resumed job that
//! reuses stored parts assembles a byte-identical document.

mod assemble;
pub mod font;

pub use assemble::Assembler;

use crate::error::JobError;
use lopdf::{Dictionary, Document, Object, ObjectId, Stream, Writer};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use sha2::{Digest, Sha256};
use std::io::Write;

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
        self.body(id, &serialise(obj)?)
    }

    /// Writes an already serialised object body as object `id`.
    fn body(&mut self, id: u32, body: &[u8]) -> Result<(), JobError> {
        self.pieces(id, &[body])
    }

    /// Writes a stream object from its serialised dictionary and its raw data.
    fn stream(&mut self, id: u32, dict: &[u8], data: &[u8]) -> Result<(), JobError> {
        self.pieces(id, &[dict, b"\nstream\n", data, b"\nendstream"])
    }

    /// Writes object `id` whose body is `pieces` one after another, recording its offset.
    fn pieces(&mut self, id: u32, pieces: &[&[u8]]) -> Result<(), JobError> {
        self.offsets[id as usize] = self.pos;
        self.raw(format!("{id} 0 obj\n").as_bytes())?;
        for p in pieces {
            self.raw(p)?;
        }
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

fn serialise(obj: &Object) -> Result<Vec<u8>, JobError> {
    let mut body = Vec::new();
    Writer::write_object(&mut body, obj).map_err(|e| pdf_err("serialise", e))?;
    Ok(body)
}

pub(crate) fn real(v: f64) -> Object {
    Object::Real((v * 1000.0).round() as f32 / 1000.0)
}

/// An image XObject ready to place: its samples encoded (`DCTDecode` or `FlateDecode`), an
/// optional soft mask (8-bit alpha, Flate), and its content id.
///
/// Parts do not carry images: a part names each image by its id ([`image_placeholder`]) and
/// the image itself is stored once per job beside the parts ([`PdfImage::to_blob`], under
/// [`image_blob_name`]); the assembler writes it into the document at its first use.
#[derive(Debug, Clone, PartialEq)]
pub struct PdfImage {
    pub width: u32,
    pub height: u32,
    /// `DeviceRGB` or `DeviceGray`.
    pub color_space: &'static str,
    /// `DCTDecode` or `FlateDecode`.
    pub filter: &'static str,
    pub data: Vec<u8>,
    /// Flate-compressed alpha, `width × height` bytes before compression.
    pub smask: Option<Vec<u8>>,
    /// SHA-256 of everything above, in hex: equal ids are the same image.
    pub id: String,
}

/// The first line of a stored image blob.
const BLOB_MAGIC: &[u8] = b"kiln-pdf-image 1\n";

/// The stored name of image `id`, beside the parts.
pub fn image_blob_name(id: &str) -> String {
    format!(".parts/image-{id}.bin")
}

impl PdfImage {
    pub fn new(width: u32, height: u32, color_space: &'static str, filter: &'static str, data: Vec<u8>, smask: Option<Vec<u8>>) -> Self {
        let mut h = Sha256::new();
        h.update(format!("{width} {height} {color_space} {filter} {} {:?}\n", data.len(), smask.as_ref().map(Vec::len)));
        h.update(&data);
        if let Some(m) = &smask {
            h.update(m);
        }
        let id = hex::encode(h.finalize());
        PdfImage { width, height, color_space, filter, data, smask, id }
    }

    /// The stored form: a header line (magic), a line of
    /// `width height colour-space filter data-length smask-length`, the data, the mask.
    pub fn to_blob(&self) -> Vec<u8> {
        let mask = self.smask.as_deref().unwrap_or_default();
        let mut b = BLOB_MAGIC.to_vec();
        let line = format!("{} {} {} {} {} {}\n", self.width, self.height, self.color_space, self.filter, self.data.len(), self.smask.as_ref().map_or(-1, |m| m.len() as i64));
        b.extend_from_slice(line.as_bytes());
        b.extend_from_slice(&self.data);
        b.extend_from_slice(mask);
        b
    }

    /// Reads a stored blob back; `id` must be what it hashes to.
    pub fn from_blob(blob: &[u8], id: &str) -> Result<Self, JobError> {
        let bad = |why: &str| JobError::internal(format!("stored image {id}: {why}"));
        let rest = blob.strip_prefix(BLOB_MAGIC).ok_or_else(|| bad("not an image blob"))?;
        let nl = rest.iter().position(|b| *b == b'\n').ok_or_else(|| bad("no header"))?;
        let header = std::str::from_utf8(&rest[..nl]).map_err(|_| bad("header is not text"))?;
        let f: Vec<&str> = header.split(' ').collect();
        let [w, h, cs, filter, n, m] = f[..] else { return Err(bad("header fields")) };
        let num = |v: &str| v.parse::<i64>().map_err(|_| bad("header numbers"));
        let (w, h, n, m) = (num(w)?, num(h)?, num(n)?, num(m)?);
        let color_space = match cs {
            "DeviceRGB" => "DeviceRGB",
            "DeviceGray" => "DeviceGray",
            _ => return Err(bad("colour space")),
        };
        let filter = match filter {
            "DCTDecode" => "DCTDecode",
            "FlateDecode" => "FlateDecode",
            _ => return Err(bad("filter")),
        };
        let body = &rest[nl + 1..];
        let (n, mask_len) = (usize::try_from(n).map_err(|_| bad("data length"))?, usize::try_from(m.max(0)).unwrap_or(0));
        if n.checked_add(mask_len) != Some(body.len()) || w <= 0 || h <= 0 || w > u32::MAX as i64 || h > u32::MAX as i64 {
            return Err(bad("lengths"));
        }
        let smask = (m >= 0).then(|| body[n..].to_vec());
        let image = PdfImage::new(w as u32, h as u32, color_space, filter, body[..n].to_vec(), smask);
        if image.id != id {
            return Err(bad("content does not match its id"));
        }
        Ok(image)
    }

    fn objects(&self) -> (Dictionary, Option<Stream>) {
        let dict = |w: u32, h: u32, cs: &str, filter: &str| {
            let mut d = Dictionary::new();
            d.set("Type", Object::Name(b"XObject".to_vec()));
            d.set("Subtype", Object::Name(b"Image".to_vec()));
            d.set("Width", w as i64);
            d.set("Height", h as i64);
            d.set("ColorSpace", Object::Name(cs.as_bytes().to_vec()));
            d.set("BitsPerComponent", 8i64);
            d.set("Filter", Object::Name(filter.as_bytes().to_vec()));
            d
        };
        let smask = self.smask.as_ref().map(|a| Stream::new(dict(self.width, self.height, "DeviceGray", "FlateDecode"), a.clone()));
        (dict(self.width, self.height, self.color_space, self.filter), smask)
    }

    /// Writes the image (its soft mask first) into a document as object `id`.
    fn write<W: Write>(&self, out: &mut ObjWriter<W>, id: u32) -> Result<(), JobError> {
        let (mut dict, smask) = self.objects();
        if let Some(s) = smask {
            let sid = out.alloc();
            dict.set("SMask", Object::Reference((sid, 0)));
            out.object(sid, &Object::Stream(s))?;
        }
        // The samples are written as they are, without building a stream object around a
        // copy of them.
        let mut head = Vec::new();
        dict.set("Length", self.data.len() as i64);
        Writer::write_object(&mut head, &Object::Dictionary(dict)).map_err(|e| pdf_err("serialise", e))?;
        out.stream(id, &head, &self.data)
    }
}

/// The part's stand-in for an image stored beside the parts: `<< /KilnImage (id) >>`.
pub fn image_placeholder(id: &str) -> Dictionary {
    let mut d = Dictionary::new();
    d.set("KilnImage", Object::string_literal(id.as_bytes().to_vec()));
    d
}

/// The image id a placeholder names.
pub fn read_image_placeholder(obj: &Object) -> Option<String> {
    let d = obj.as_dict().ok()?;
    let id = d.get(b"KilnImage").ok()?.as_str().ok()?;
    (d.len() == 1).then(|| String::from_utf8_lossy(id).into_owned())
}

/// A transparency group drawn as a form XObject: `content` in the page's user space, clipped
/// to `bbox`, with its own graphics states (`/G0`, `/G1`, …).
#[derive(Debug, Clone, PartialEq)]
pub struct Form {
    pub bbox: [f64; 4],
    pub content: Vec<u8>,
    pub gstates: Vec<Dictionary>,
}

/// What a vector page's content stream names: fonts `/F0…` (name and the glyphs used, see
/// [`font::placeholder`]), images `/Im0…`, forms `/Fm0…`, graphics states `/G0…`.
#[derive(Debug, Default)]
pub struct Resources {
    pub fonts: Vec<(String, BTreeMap<u16, String>)>,
    pub images: Vec<std::sync::Arc<PdfImage>>,
    pub forms: Vec<Form>,
    pub gstates: Vec<Dictionary>,
}

pub fn deflate(data: &[u8]) -> Result<Vec<u8>, JobError> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
    z.write_all(data).map_err(|e| pdf_err("deflate", e))?;
    z.finish().map_err(|e| pdf_err("deflate", e))
}

fn flate_stream(mut dict: Dictionary, data: &[u8]) -> Result<Stream, JobError> {
    dict.set("Filter", Object::Name(b"FlateDecode".to_vec()));
    Ok(Stream::new(dict, deflate(data)?))
}

fn named(prefix: &str, ids: &[u32]) -> Dictionary {
    let mut d = Dictionary::new();
    for (i, id) in ids.iter().enumerate() {
        d.set(format!("{prefix}{i}").into_bytes(), Object::Reference((*id, 0)));
    }
    d
}

fn gstate_dict(gstates: &[Dictionary]) -> Dictionary {
    let mut d = Dictionary::new();
    for (i, g) in gstates.iter().enumerate() {
        d.set(format!("G{i}").into_bytes(), Object::Dictionary(g.clone()));
    }
    d
}

/// A single-page PDF of a drawn page: `content` (in PDF user space, points) over a
/// `size_pt` page, with its `resources`.
pub fn vector_part(size_pt: (f64, f64), content: &[u8], res: &Resources) -> Result<Vec<u8>, JobError> {
    let mut out = ObjWriter::new(Vec::new())?;
    let (catalog, pages, page, contents) = (out.alloc(), out.alloc(), out.alloc(), out.alloc());
    out.object(catalog, &catalog_dict(pages))?;
    out.object(pages, &pages_dict(&[page]))?;
    let fonts: Vec<u32> = res.fonts.iter().map(|_| out.alloc()).collect();
    let images: Vec<u32> = res.images.iter().map(|_| out.alloc()).collect();
    let forms: Vec<u32> = res.forms.iter().map(|_| out.alloc()).collect();

    let mut resources = Dictionary::new();
    if !fonts.is_empty() {
        resources.set("Font", named("F", &fonts));
    }
    let mut xobjects = named("Im", &images);
    for (k, v) in named("Fm", &forms).into_iter() {
        xobjects.set(k, v);
    }
    if !xobjects.is_empty() {
        resources.set("XObject", xobjects);
    }
    if !res.gstates.is_empty() {
        resources.set("ExtGState", gstate_dict(&res.gstates));
    }
    let mut p = Dictionary::new();
    p.set("Type", Object::Name(b"Page".to_vec()));
    p.set("Parent", Object::Reference((pages, 0)));
    p.set("MediaBox", vec![Object::Integer(0), Object::Integer(0), real(size_pt.0), real(size_pt.1)]);
    p.set("Resources", resources);
    p.set("Contents", Object::Reference((contents, 0)));
    out.object(page, &Object::Dictionary(p))?;
    out.object(contents, &Object::Stream(flate_stream(Dictionary::new(), content)?))?;
    for ((name, glyphs), id) in res.fonts.iter().zip(&fonts) {
        out.object(*id, &Object::Dictionary(font::placeholder(name, glyphs)))?;
    }
    for (im, id) in res.images.iter().zip(&images) {
        out.object(*id, &Object::Dictionary(image_placeholder(&im.id)))?;
    }
    for (f, id) in res.forms.iter().zip(&forms) {
        let mut d = Dictionary::new();
        d.set("Type", Object::Name(b"XObject".to_vec()));
        d.set("Subtype", Object::Name(b"Form".to_vec()));
        d.set("BBox", f.bbox.iter().map(|v| real(*v)).collect::<Vec<_>>());
        let mut g = Dictionary::new();
        g.set("S", Object::Name(b"Transparency".to_vec()));
        g.set("I", true);
        g.set("CS", Object::Name(b"DeviceRGB".to_vec()));
        d.set("Group", g);
        let mut r = Dictionary::new();
        if !f.gstates.is_empty() {
            r.set("ExtGState", gstate_dict(&f.gstates));
        }
        d.set("Resources", r);
        out.object(*id, &Object::Stream(flate_stream(d, &f.content)?))?;
    }
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


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_blobs_round_trip_and_refuse_what_is_not_theirs() {
        let with_mask = PdfImage::new(3, 2, "DeviceRGB", "FlateDecode", deflate(&[7; 18]).unwrap(), Some(deflate(&[0, 255, 9, 9, 9, 9]).unwrap()));
        let plain = PdfImage::new(3, 2, "DeviceGray", "DCTDecode", vec![1, 2, 3], None);
        for im in [&with_mask, &plain] {
            assert_eq!(&PdfImage::from_blob(&im.to_blob(), &im.id).unwrap(), im);
        }
        assert_ne!(with_mask.id, plain.id);
        // The same samples without their mask, or with an empty one, are other images.
        let no_mask = PdfImage::new(3, 2, "DeviceRGB", "FlateDecode", with_mask.data.clone(), None);
        let empty_mask = PdfImage::new(3, 2, "DeviceRGB", "FlateDecode", with_mask.data.clone(), Some(Vec::new()));
        assert_ne!(no_mask.id, with_mask.id);
        assert_ne!(no_mask.id, empty_mask.id);
        assert_eq!(PdfImage::from_blob(&empty_mask.to_blob(), &empty_mask.id).unwrap(), empty_mask);
        // Another id, a flipped byte, a cut blob, a bad header: errors, not images.
        let blob = with_mask.to_blob();
        assert!(PdfImage::from_blob(&blob, &plain.id).is_err());
        let mut flipped = blob.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(PdfImage::from_blob(&flipped, &with_mask.id).is_err());
        assert!(PdfImage::from_blob(&blob[..blob.len() - 1], &with_mask.id).is_err());
        assert!(PdfImage::from_blob(b"kiln-pdf-image 1\n3 2 DeviceCMYK DCTDecode 0 -1\n", &plain.id).is_err());
        assert!(PdfImage::from_blob(b"", &plain.id).is_err());
    }

    #[test]
    fn a_part_names_its_image_and_the_assembler_writes_it_once() {
        let im = std::sync::Arc::new(PdfImage::new(2, 1, "DeviceRGB", "FlateDecode", deflate(&[1, 2, 3, 4, 5, 6]).unwrap(), None));
        let res = Resources { images: vec![im.clone()], ..Default::default() };
        let part = vector_part((10.0, 10.0), b"q /Im0 Do Q", &res).unwrap();
        let doc = Document::load_mem(&part).unwrap();
        let placeholders: Vec<String> = doc.objects.values().filter_map(read_image_placeholder).collect();
        assert_eq!(placeholders, vec![im.id.clone()]);
        let mut asked = Vec::new();
        let mut asm = Assembler::new(Vec::new()).unwrap();
        for _ in 0..3 {
            asm.add_part(&part, "part", &mut |id| {
                asked.push(id.to_owned());
                Ok(im.clone())
            })
            .unwrap();
        }
        assert_eq!(asked, vec![im.id.clone()], "asked for once");
        let pdf = Document::load_mem(&asm.finish().unwrap()).unwrap();
        assert_eq!(pdf.get_pages().len(), 3);
        let images: Vec<_> = pdf.objects.values().filter_map(|o| o.as_stream().ok()).filter(|s| s.dict.get(b"Subtype").and_then(Object::as_name).ok() == Some(b"Image")).collect();
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].content, im.data);
        assert_eq!(images[0].dict.get(b"Length").and_then(Object::as_i64).unwrap(), im.data.len() as i64);
        // An image the provider cannot give fails the assembly.
        let mut asm = Assembler::new(Vec::new()).unwrap();
        assert!(asm.add_part(&part, "part", &mut |_| Err(JobError::internal("gone"))).is_err());
    }
}
