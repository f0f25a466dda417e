//! Model outputs → JSON: YOLO-style detections (confidence threshold, per-class NMS, boxes
//! back in source pixels), classification tags (optional softmax, top-k), or raw tensors.

use super::batcher::ItemOutput;
use super::config::ModelConfig;
use super::preprocess::Geometry;
use crate::error::JobError;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    pub label: String,
    pub score: f32,
    /// `[x1, y1, x2, y2]` in source pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tag {
    pub label: String,
    pub score: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub data: Vec<f32>,
}

fn label(labels: &[String], class: usize) -> String {
    labels.get(class).cloned().unwrap_or_else(|| format!("class_{class}"))
}

/// Decodes a YOLOv8-style head, `[4 + classes, anchors]` or `[anchors, 4 + classes]`
/// (the smaller dimension is the channels), boxes as centre x, centre y, width, height.
pub fn detect(out: &[ItemOutput], m: &ModelConfig, labels: &[String], geo: &Geometry) -> Result<Vec<Detection>, JobError> {
    let o = out.first().ok_or_else(|| JobError::internal("the model gave no output"))?;
    let [a, b] = match o.shape[..] {
        [a, b] if a > 0 && b > 0 => [a as usize, b as usize],
        _ => return Err(JobError::internal(format!("detect: output {:?} has shape {:?}, expected [4+classes, anchors]", o.name, o.shape))),
    };
    let channels_first = a <= b;
    let (ch, anchors) = if channels_first { (a, b) } else { (b, a) };
    if ch < 5 {
        return Err(JobError::internal(format!("detect: output {:?} has {ch} channels, expected 4 + classes", o.name)));
    }
    let at = |c: usize, i: usize| if channels_first { o.data[c * anchors + i] } else { o.data[i * ch + c] };
    let mut cands: Vec<(usize, f32, [f32; 4])> = Vec::new();
    for i in 0..anchors {
        let (mut best, mut score) = (0, f32::MIN);
        for c in 4..ch {
            let s = at(c, i);
            if s > score {
                (best, score) = (c - 4, s);
            }
        }
        if score >= m.score_threshold {
            let (cx, cy, w, h) = (at(0, i), at(1, i), at(2, i), at(3, i));
            cands.push((best, score, [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]));
        }
    }
    let kept = nms(cands, m.nms_iou, m.max_detections);
    Ok(kept
        .into_iter()
        .map(|(class, score, b)| Detection { label: label(labels, class), score, bbox: geo.to_source(b) })
        .collect())
}

/// Greedy per-class non-maximum suppression, highest score first; at most `max` kept.
pub fn nms(mut cands: Vec<(usize, f32, [f32; 4])>, iou_max: f32, max: usize) -> Vec<(usize, f32, [f32; 4])> {
    cands.sort_by(|x, y| y.1.total_cmp(&x.1));
    let mut kept: Vec<(usize, f32, [f32; 4])> = Vec::new();
    for c in cands {
        if kept.len() >= max {
            break;
        }
        if kept.iter().all(|k| k.0 != c.0 || iou(&k.2, &c.2) <= iou_max) {
            kept.push(c);
        }
    }
    kept
}

pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// The top-k classes of the first output.
pub fn classify(out: &[ItemOutput], m: &ModelConfig, labels: &[String]) -> Result<Vec<Tag>, JobError> {
    let o = out.first().ok_or_else(|| JobError::internal("the model gave no output"))?;
    let mut scores = o.data.clone();
    if m.softmax {
        let max = scores.iter().copied().fold(f32::MIN, f32::max);
        let sum: f32 = scores.iter_mut().map(|s| {
            *s = (*s - max).exp();
            *s
        }).sum();
        scores.iter_mut().for_each(|s| *s /= sum);
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|x, y| scores[*y].total_cmp(&scores[*x]));
    Ok(idx.into_iter().take(m.top_k).map(|i| Tag { label: label(labels, i), score: scores[i] }).collect())
}

pub fn tensors(out: Vec<ItemOutput>) -> Vec<Tensor> {
    out.into_iter().map(|o| Tensor { name: o.name, shape: o.shape, data: o.data }).collect()
}

/// Class names from Ultralytics' `names` metadata: a Python dict literal
/// `{0: 'person', 1: 'bicycle'}`. Empty when it does not parse.
pub fn parse_names(meta: &str) -> Vec<String> {
    let mut out: Vec<(usize, String)> = Vec::new();
    let body = meta.trim().trim_start_matches('{').trim_end_matches('}');
    let mut rest = body;
    while let Some(colon) = rest.find(':') {
        let Ok(key) = rest[..colon].trim().trim_start_matches(',').trim().parse::<usize>() else { return Vec::new() };
        let after = rest[colon + 1..].trim_start();
        let Some(q) = after.chars().next().filter(|c| *c == '\'' || *c == '"') else { return Vec::new() };
        let Some(end) = after[1..].find(q) else { return Vec::new() };
        out.push((key, after[1..1 + end].to_owned()));
        rest = &after[end + 2..];
    }
    out.sort_by_key(|(k, _)| *k);
    if out.iter().enumerate().any(|(i, (k, _))| i != *k) {
        return Vec::new();
    }
    out.into_iter().map(|(_, v)| v).collect()
}
