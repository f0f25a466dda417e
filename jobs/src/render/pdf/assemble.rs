//! The document assembler: parts in, one PDF out, streamed.
//!
//! Each part's page and the objects it reaches are renumbered into the document and written
//! at once (children before parents). Streams and font dictionaries are *shared*: their
//! serialised form (references already renumbered) is hashed, and an object whose hash was
//! written before is not written again — the part's references point at the first copy. So
//! a photo placed on 100 pages, or the font program of a source PDF merged page by page, is
//! stored once. Font placeholders ([`super::font`]) are not written at all: each font name
//! gets one object number on first sight, collects the glyphs of every page, and is written,
//! subset, in [`Assembler::finish`]. Image placeholders ([`super::image_placeholder`]) name
//! images stored once per job beside the parts: each id is written at its first use, from
//! memory when the image was built by this attempt, read back from the store otherwise, and
//! referenced afterwards.

use super::font::{self, DocFont};
use super::{catalog_dict, pages_dict, read_image_placeholder, renumber, serialise, ObjWriter, PdfImage};
use crate::error::JobError;
use lopdf::{Document, Object, ObjectId};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::sync::Arc;

/// Writes the final document part by part.
pub struct Assembler<W: Write> {
    out: ObjWriter<W>,
    catalog: u32,
    pages: u32,
    kids: Vec<u32>,
    /// Content hash of every shared object written → its object number.
    shared: HashMap<[u8; 32], u32>,
    /// Image id → its object number, for every image written.
    images: HashMap<String, u32>,
    fonts: Vec<DocFont>,
}

/// Objects worth sharing between pages: every stream (images, font programs, content,
/// forms) and font dictionaries.
fn shareable(obj: &Object) -> bool {
    match obj {
        Object::Stream(_) => true,
        Object::Dictionary(d) => d.get(b"Type").and_then(Object::as_name).is_ok_and(|t| t == b"Font" || t == b"FontDescriptor"),
        _ => false,
    }
}

fn children(obj: &Object, out: &mut Vec<ObjectId>) {
    match obj {
        Object::Reference(id) => out.push(*id),
        Object::Array(a) => a.iter().for_each(|o| children(o, out)),
        Object::Dictionary(d) => d.iter().filter(|(k, _)| k.as_slice() != b"Parent").for_each(|(_, v)| children(v, out)),
        Object::Stream(s) => s.dict.iter().filter(|(k, _)| k.as_slice() != b"Parent").for_each(|(_, v)| children(v, out)),
        _ => {}
    }
}

enum Visit {
    Enter(ObjectId),
    Exit(ObjectId),
}

impl<W: Write> Assembler<W> {
    pub fn new(out: W) -> Result<Self, JobError> {
        let mut out = ObjWriter::new(out)?;
        let (catalog, pages) = (out.alloc(), out.alloc());
        Ok(Assembler { out, catalog, pages, kids: Vec::new(), shared: HashMap::new(), images: HashMap::new(), fonts: Vec::new() })
    }

    fn font_id(&mut self, name: String, glyphs: Vec<(u16, String)>) -> u32 {
        let i = match self.fonts.iter().position(|f| f.name == name) {
            Some(i) => i,
            None => {
                let id = self.out.alloc();
                self.fonts.push(DocFont { name, id, glyphs: BTreeMap::new() });
                self.fonts.len() - 1
            }
        };
        self.fonts[i].add(glyphs);
        self.fonts[i].id
    }

    /// Appends the page of a part (as written by [`super::vector_part`] or
    /// [`super::extract_part`]); `image` gives the image of an id the part names.
    pub fn add_part(&mut self, part: &[u8], what: &str, image: &mut dyn FnMut(&str) -> Result<Arc<PdfImage>, JobError>) -> Result<(), JobError> {
        let bad = |e: lopdf::Error| JobError::internal(format!("{what}: stored part: {e}"));
        let doc = Document::load_mem(part).map_err(bad)?;
        let page_id = *doc.get_pages().get(&1).ok_or_else(|| JobError::internal(format!("{what}: stored part has no page")))?;
        let mut map: BTreeMap<ObjectId, u32> = BTreeMap::new();
        let mut visiting = HashSet::new();
        let mut stack = vec![Visit::Enter(page_id)];
        let mut kids = Vec::new();
        // Depth first, children written before their parents, so a shared object's
        // references are final when it is hashed. Unshared objects get their number on
        // entry (cycles through them resolve); a shared one met again while its children are
        // being visited (a cycle) gets a number then and is not shared.
        while let Some(v) = stack.pop() {
            match v {
                Visit::Enter(id) => {
                    if map.contains_key(&id) {
                        continue;
                    }
                    if visiting.contains(&id) {
                        let n = self.out.alloc();
                        map.insert(id, n);
                        continue;
                    }
                    let Ok(obj) = doc.get_object(id) else { continue };
                    if let Some(image_id) = read_image_placeholder(obj) {
                        let n = match self.images.get(&image_id) {
                            Some(n) => *n,
                            None => {
                                let im = image(&image_id)?;
                                let n = self.out.alloc();
                                im.write(&mut self.out, n)?;
                                self.images.insert(image_id, n);
                                n
                            }
                        };
                        map.insert(id, n);
                        continue;
                    }
                    if let Some((name, glyphs)) = font::read_placeholder(obj) {
                        let n = self.font_id(name, glyphs);
                        map.insert(id, n);
                        continue;
                    }
                    if id == page_id || !shareable(obj) {
                        let n = self.out.alloc();
                        map.insert(id, n);
                    }
                    visiting.insert(id);
                    stack.push(Visit::Exit(id));
                    kids.clear();
                    children(obj, &mut kids);
                    stack.extend(kids.iter().rev().map(|k| Visit::Enter(*k)));
                }
                Visit::Exit(id) => {
                    visiting.remove(&id);
                    let obj = doc.get_object(id).map_err(bad)?;
                    let mut obj = renumber(obj, &map);
                    if id == page_id {
                        if let Object::Dictionary(d) = &mut obj {
                            d.set("Parent", Object::Reference((self.pages, 0)));
                        }
                    }
                    let body = serialise(&obj)?;
                    if let Some(n) = map.get(&id) {
                        self.out.body(*n, &body)?;
                        continue;
                    }
                    let key: [u8; 32] = Sha256::digest(&body).into();
                    if let Some(n) = self.shared.get(&key) {
                        map.insert(id, *n);
                    } else {
                        let n = self.out.alloc();
                        self.out.body(n, &body)?;
                        self.shared.insert(key, n);
                        map.insert(id, n);
                    }
                }
            }
        }
        self.kids.push(map[&page_id]);
        Ok(())
    }

    /// Writes the fonts, page tree, catalog, xref and trailer; returns the writer.
    pub fn finish(mut self) -> Result<W, JobError> {
        for f in std::mem::take(&mut self.fonts) {
            font::write(&mut self.out, &f)?;
        }
        self.out.object(self.pages, &pages_dict(&self.kids))?;
        self.out.object(self.catalog, &catalog_dict(self.pages))?;
        self.out.finish(self.catalog)
    }
}
