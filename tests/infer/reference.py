"""Reference detections from Python onnxruntime on kiln's own preprocessed inputs.

usage: reference.py MODEL RESULT_JSON INPUT_DIR SCORE_THRESHOLD NMS_IOU INPUT_W INPUT_H

RESULT_JSON is kiln's result for an infer job run with "save_input": true; INPUT_DIR holds
its input-NNNN.f32 / input-NNNN.json outputs. The decoding (YOLOv8 head, per-class greedy
NMS, top-left letterbox back to source pixels) is written independently of kiln's. Prints
one JSON list of detections per image.
"""
import json
import math
import os
import sys

import numpy as np
import onnxruntime as ort


def iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area = lambda r: max(0.0, r[2] - r[0]) * max(0.0, r[3] - r[1])
    u = area(a) + area(b) - inter
    return inter / u if u > 0 else 0.0


def main():
    model, result_path, input_dir, thr, nms_iou, in_w, in_h = sys.argv[1:]
    thr, nms_iou, in_w, in_h = float(thr), float(nms_iou), int(in_w), int(in_h)
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map.get("names", "{}")
    names = eval(meta)  # the model's own metadata: a dict literal
    result = json.load(open(result_path))
    out = []
    for entry in result["inference"]:
        i = entry["image"]
        shape = json.load(open(os.path.join(input_dir, f"input-{i:04d}.json")))["shape"]
        x = np.fromfile(os.path.join(input_dir, f"input-{i:04d}.f32"), dtype="<f4").reshape([1] + shape)
        (pred,) = sess.run(None, {sess.get_inputs()[0].name: x})
        pred = pred[0].T  # [anchors, 4 + classes]
        cls = pred[:, 4:].argmax(axis=1)
        score = pred[:, 4:].max(axis=1)
        keep = np.where(score >= thr)[0]
        cands = []
        for k in keep:
            cx, cy, w, h = (float(v) for v in pred[k, :4])
            cands.append((int(cls[k]), float(score[k]), [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]))
        cands.sort(key=lambda c: -c[1])
        kept = []
        for c in cands:
            if all(k[0] != c[0] or iou(k[2], c[2]) <= nms_iou for k in kept):
                kept.append(c)
        sw, sh = entry["width"], entry["height"]
        s = min(in_w / sw, in_h / sh)
        rw = min(max(math.floor(sw * s + 0.5), 1), in_w)
        rh = min(max(math.floor(sh * s + 0.5), 1), in_h)
        fx, fy = rw / sw, rh / sh
        dets = []
        for c, sc, b in kept[:300]:
            box = [min(max(b[0] / fx, 0), sw), min(max(b[1] / fy, 0), sh), min(max(b[2] / fx, 0), sw), min(max(b[3] / fy, 0), sh)]
            dets.append({"label": names.get(c, f"class_{c}"), "score": sc, "box": box})
        out.append(dets)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
