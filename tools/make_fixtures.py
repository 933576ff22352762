#!/usr/bin/env python3
"""Deterministic generator of the small committed test fixtures under tests/fixtures/.

Run from the repository root:

    .venv/bin/python tools/make_fixtures.py            # (re)generate + self-checks
    .venv/bin/python tools/make_fixtures.py --out DIR   # write somewhere else

Everything is derived from fixed seeds; running it twice gives byte-identical files
(PNG via zlib level 9, ONNX via protobuf serialisation). Needs numpy, onnx, onnxruntime
(tools/requirements.txt). No image library is needed: PNGs are written (and read back
for the self-check) by the small codec below.

What is produced (see tests/fixtures/README.md for the long version):
  synthetic/{reference,calibration}/{images,labels}/*.png, synthetic/batch/*.png,
  synthetic/batch_labels/*.png, synthetic/checkpoints/ckpt_00..07.onnx,
  synthetic/checkpoints_rgb_sigmoid/ckpt_00..05.onnx, synthetic/spec_*.json,
  synthetic/checkpoint_metrics.json, universeg_tiny.onnx, corrupt/*.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

H = W = 128
OPSET = 17
IR_VERSION = 8  # opset 17 <-> IR 8; loads in onnxruntime >= 1.12 and the ort crate

REPO_ROOT = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------------------
# PNG codec (8-bit grayscale only; enough for the fixtures and their self-check)
# --------------------------------------------------------------------------------------
PNG_SIG = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(img: np.ndarray) -> bytes:
    """Encode a 2-D uint8 array as an 8-bit grayscale PNG (filter 'Sub' on every row)."""
    assert img.dtype == np.uint8 and img.ndim == 2
    h, w = img.shape
    sub = img.astype(np.int16)
    sub[:, 1:] -= img[:, :-1].astype(np.int16)
    sub = (sub % 256).astype(np.uint8)
    raw = b"".join(b"\x01" + sub[r].tobytes() for r in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return PNG_SIG + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b"")


def png_read_gray(data: bytes) -> np.ndarray:
    """Decode an 8-bit grayscale, non-interlaced PNG (all five filter types)."""
    if data[:8] != PNG_SIG:
        raise ValueError("not a PNG")
    pos, idat, w, h = 8, b"", None, None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if (depth, color, interlace) != (8, 0, 0):
                raise ValueError("only 8-bit gray non-interlaced supported")
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
        pos += 12 + n
    raw = zlib.decompress(idat)
    out = np.zeros((h, w), np.uint8)
    prev = np.zeros(w, np.int32)
    stride = w + 1
    for r in range(h):
        f = raw[r * stride]
        line = np.frombuffer(raw, np.uint8, w, r * stride + 1).astype(np.int32)
        cur = np.zeros(w, np.int32)
        for c in range(w):
            a = cur[c - 1] if c else 0
            b = prev[c]
            cc = prev[c - 1] if c else 0
            if f == 0:
                p = 0
            elif f == 1:
                p = a
            elif f == 2:
                p = b
            elif f == 3:
                p = (a + b) // 2
            else:
                pa, pb, pc = abs(b - cc), abs(a - cc), abs(a + b - 2 * cc)
                p = a if (pa <= pb and pa <= pc) else (b if pb <= pc else cc)
            cur[c] = (line[c] + p) & 0xFF
        out[r] = cur
        prev = cur
    return out


# --------------------------------------------------------------------------------------
# Synthetic "organ" dataset
# --------------------------------------------------------------------------------------
def gblur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur, reflect padding, radius 3 sigma."""
    r = int(3 * sigma + 0.5)
    t = np.arange(-r, r + 1)
    k = np.exp(-t ** 2 / (2 * sigma ** 2))
    k /= k.sum()
    p = np.pad(x, ((r, r), (0, 0)), mode="reflect")
    x = sum(k[i] * p[i:i + x.shape[0]] for i in range(2 * r + 1))
    p = np.pad(x, ((0, 0), (r, r)), mode="reflect")
    return sum(k[i] * p[:, i:i + x.shape[1]] for i in range(2 * r + 1))


def make_case(rng: np.random.Generator):
    """One 128x128 image + its binary label.

    Dark surround, a large soft 'body' oval of tissue intensity (80-110) with low-frequency
    texture and a slight gradient, one bright ellipse 'organ' (mean 145-175; the label),
    sometimes 1-2 small bright distractor blobs (not labelled), Gaussian noise (sigma 8-14).
    """
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    base = rng.uniform(35, 55)
    tissue = rng.uniform(80, 110)
    tex = gblur(rng.normal(size=(H, W)), 6)
    tex = tex / tex.std() * rng.uniform(6, 12)
    gx, gy = rng.uniform(-0.15, 0.15, 2)
    body = ((xx - 64) / rng.uniform(52, 60)) ** 2 + ((yy - 66) / rng.uniform(56, 62)) ** 2
    bodym = gblur((body < 1).astype(float), 3)
    img = base + bodym * (tissue - base) + tex + gx * (xx - 64) + gy * (yy - 64)

    cx = 64 + rng.normal(0, 9)
    cy = 70 + rng.normal(0, 8)
    a = rng.uniform(17, 27)
    b = a * rng.uniform(0.65, 0.95)
    th = np.deg2rad(rng.normal(20, 15))
    u = (xx - cx) * np.cos(th) + (yy - cy) * np.sin(th)
    v = -(xx - cx) * np.sin(th) + (yy - cy) * np.cos(th)
    lab = (u / a) ** 2 + (v / b) ** 2 <= 1
    contrast = rng.uniform(145, 175) - tissue
    img = img + gblur(lab.astype(float), 1.5) * contrast + gblur(rng.normal(size=(H, W)), 1.2) * 4 * lab
    if rng.random() < 0.6:
        for _ in range(int(rng.integers(1, 3))):
            while True:
                dx, dy = rng.uniform(15, 113, 2)
                if (dx - cx) ** 2 + (dy - cy) ** 2 > (a + 14) ** 2:
                    break
            r = rng.uniform(4, 8)
            blob = (((xx - dx) ** 2 + (yy - dy) ** 2) < r * r).astype(float)
            img = img + gblur(blob, 1.5) * contrast * rng.uniform(0.7, 1.1)
    img = img + rng.normal(0, rng.uniform(8, 14), (H, W))
    return np.clip(np.round(img), 0, 255).astype(np.uint8), lab


SPLITS = {  # name: (seed, count)
    "reference": (1001, 24),
    "calibration": (1002, 16),
    "batch": (1003, 12),
}


def make_split(name: str):
    seed, n = SPLITS[name]
    rng = np.random.default_rng(seed)
    return [make_case(rng) for _ in range(n)]


# --------------------------------------------------------------------------------------
# Metrics / label fusion (numpy, for the self-check and the summary only)
# --------------------------------------------------------------------------------------
def dice(g: np.ndarray, p: np.ndarray) -> float:
    g = g.astype(bool)
    p = p.astype(bool)
    s = int(g.sum()) + int(p.sum())
    return 1.0 if s == 0 else 2.0 * int((g & p).sum()) / s


def minmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def label_fusion(q, sup_imgs, sup_labs, sigma=4.0):
    """Locally weighted voting as in docs/method.md (full 128x128, sigma 4)."""
    q = minmax(q)
    d = np.stack([gblur((q - minmax(s)) ** 2, sigma) for s in sup_imgs])
    h = np.median(d)
    w = np.exp(-(d - d.min(0)) / h)
    f = (w * np.stack([l.astype(float) for l in sup_labs])).sum(0) / w.sum(0)
    return f > 0.5


# --------------------------------------------------------------------------------------
# ONNX helpers
# --------------------------------------------------------------------------------------
def finish_model(graph, name: str) -> onnx.ModelProto:
    m = helper.make_model(graph, producer_name="spe-make_fixtures", opset_imports=[helper.make_opsetid("", OPSET)])
    m.ir_version = IR_VERSION
    m.model_version = 1
    m.doc_string = name
    onnx.checker.check_model(m, full_check=True)
    return m


def checkpoint_model(nodes, inits, graph_name: str, inp, out, name: str) -> onnx.ModelProto:
    """A one-input one-output model over [N, channels, H, W] float tensors; `inp` and `out` are
    (tensor name, channels)."""
    graph = helper.make_graph(
        nodes,
        graph_name,
        [helper.make_tensor_value_info(inp[0], TensorProto.FLOAT, ["N", inp[1], H, W])],
        [helper.make_tensor_value_info(out[0], TensorProto.FLOAT, ["N", out[1], H, W])],
        inits,
    )
    return finish_model(graph, name)


def save_model(m: onnx.ModelProto, path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(m.SerializeToString(deterministic=True))


def box_kernel(k: int) -> np.ndarray:
    return np.full((k, k), 1.0 / (k * k), np.float32)


def disk_kernel(r: int) -> np.ndarray:
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return (xx ** 2 + yy ** 2 <= r * r).astype(np.float32)


STEEP = 1.0e4  # slope of the erosion/dilation stages: turns their sums into hard thresholds
GAIN = 200.0  # logit slope of a plain threshold model
GAIN_BEFORE_OPENING = 1.0e6  # first-stage slope when an opening follows (sigmoid saturates to 0/1)


def snap_threshold(t: float, k: int) -> float:
    """Move t to the middle between two attainable values of a k x k box mean of 8-bit data / 255.

    A k x k box sum of uint8 pixels is an integer, so its mean/255 lives on a grid of step
    1/(255 k^2). Putting the threshold half a step away from every grid point keeps each
    pixel's decision far from floating-point rounding (identical masks on any CPU/GPU).
    """
    levels = 255.0 * k * k
    return (np.floor(t * levels) + 0.5) / levels


def opening_nodes(inp: str, r: int, prefix: str, inits: list) -> tuple[list, str]:
    """Morphological opening (disk radius r) of the binary-ish map sigmoid(inp) -> a logit map.

    m = Sigmoid(inp); eroded = Sigmoid(STEEP*(conv_disk(m) - (n - 0.5))); logit = STEEP*(conv_disk(eroded) - 0.5).
    """
    kd = disk_kernel(r)
    n = float(kd.sum())
    ks = 2 * r + 1
    inits += [
        numpy_helper.from_array((STEEP * kd).reshape(1, 1, ks, ks), prefix + "ero_w"),
        numpy_helper.from_array(np.array([-STEEP * (n - 0.5)], np.float32), prefix + "ero_b"),
        numpy_helper.from_array((STEEP * kd).reshape(1, 1, ks, ks), prefix + "dil_w"),
        numpy_helper.from_array(np.array([-STEEP * 0.5], np.float32), prefix + "dil_b"),
    ]
    nodes = [
        helper.make_node("Sigmoid", [inp], [prefix + "m"]),
        helper.make_node("Conv", [prefix + "m", prefix + "ero_w", prefix + "ero_b"], [prefix + "ero_l"], pads=[r] * 4),
        helper.make_node("Sigmoid", [prefix + "ero_l"], [prefix + "ero"]),
        helper.make_node("Conv", [prefix + "ero", prefix + "dil_w", prefix + "dil_b"], [prefix + "open_l"], pads=[r] * 4),
    ]
    return nodes, prefix + "open_l"


# Gray/argmax family: (box size, threshold on gray/255, opening radius or 0); None = predicts nothing.
GRAY_CKPTS = [None, (1, 0.68, 0), (1, 0.65, 0), (3, 0.60, 0), (3, 0.57, 0), (3, 0.54, 0), (5, 0.50, 0), (5, 0.47, 7)]

# RGB/sigmoid family (threshold is on the luminance/255 of the raw input).
RGB_CKPTS = [None, (1, 0.66, 0), (3, 0.61, 0), (3, 0.56, 0), (5, 0.52, 0), (5, 0.48, 5)]
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _conv_same(x: np.ndarray, kern: np.ndarray) -> np.ndarray:
    """2-D correlation with zero padding ('same' size), float64."""
    r = kern.shape[0] // 2
    xp = np.pad(x.astype(np.float64), r)
    out = np.zeros(x.shape, np.float64)
    for i in range(kern.shape[0]):
        for j in range(kern.shape[1]):
            if kern[i, j]:
                out += float(kern[i, j]) * xp[i:i + x.shape[0], j:j + x.shape[1]]
    return out


def checkpoint_numpy(params, gray_u8: np.ndarray) -> np.ndarray:
    """What a synthetic checkpoint predicts (both families), computed exactly in float64."""
    if params is None:
        return np.zeros(gray_u8.shape, bool)
    k, t, r = params
    t = snap_threshold(t, k)
    m = _conv_same(gray_u8 / 255.0, np.full((k, k), 1.0 / (k * k))) > t
    if r:
        kd = disk_kernel(r).astype(np.float64)
        n = kd.sum()
        ero = _conv_same(m.astype(np.float64), kd) > n - 0.5
        m = _conv_same(ero.astype(np.float64), kd) > 0.5
    return m


def gray_argmax_model(params, idx: int) -> onnx.ModelProto:
    """input `image` [N,1,128,128] (gray/255) -> `logits` [N,2,128,128]; mask = argmax == 1."""
    inits, nodes = [], []
    if params is None:
        k, t, r = 3, 0.0, 0
        w = np.zeros((1, 1, k, k), np.float32)
        b = np.array([-5.0], np.float32)  # foreground logit -5 everywhere: predicts nothing
    else:
        k, t, r = params
        t = snap_threshold(t, k)
        a = GAIN_BEFORE_OPENING if r else GAIN
        w = (a * box_kernel(k)).reshape(1, 1, k, k)
        b = np.array([-a * t], np.float32)
    inits += [numpy_helper.from_array(w.astype(np.float32), "smooth_w"), numpy_helper.from_array(b, "smooth_b")]
    nodes.append(helper.make_node("Conv", ["image", "smooth_w", "smooth_b"], ["fg0"], pads=[k // 2] * 4))
    fg = "fg0"
    if params is not None and r:
        more, fg = opening_nodes(fg, r, "open_", inits)
        nodes += more
    # Two-channel head: background logit 0, foreground logit fg.
    inits += [
        numpy_helper.from_array(np.array([[[[0.0]]], [[[1.0]]]], np.float32), "head_w"),
        numpy_helper.from_array(np.zeros(2, np.float32), "head_b"),
    ]
    nodes.append(helper.make_node("Conv", [fg, "head_w", "head_b"], ["logits"]))
    return checkpoint_model(
        nodes, inits, f"synthetic_gray_ckpt_{idx:02d}", ("image", 1), ("logits", 2),
        f"synthetic gray/argmax checkpoint {idx:02d}: params={params}",
    )


def rgb_sigmoid_model(params, idx: int) -> onnx.ModelProto:
    """input `input` [N,3,128,128] raw 0..255 -> `prob_logits` [N,1,128,128]; fg = sigmoid > 0.5."""
    inits, nodes = [], []
    if params is None:
        k, r = 3, 0
        w = np.zeros((1, 3, k, k), np.float32)
        b = np.array([-5.0], np.float32)
    else:
        k, t, r = params
        t = snap_threshold(t, k)
        a = GAIN_BEFORE_OPENING if r else GAIN
        w = (a / 255.0) * LUMA.reshape(1, 3, 1, 1) * box_kernel(k).reshape(1, 1, k, k)
        b = np.array([-a * t], np.float32)
    inits += [numpy_helper.from_array(w.astype(np.float32), "smooth_w"), numpy_helper.from_array(b, "smooth_b")]
    out0 = "prob_logits" if not (params is not None and r) else "fg0"
    nodes.append(helper.make_node("Conv", ["input", "smooth_w", "smooth_b"], [out0], pads=[k // 2] * 4))
    if params is not None and r:
        more, fg = opening_nodes(out0, r, "open_", inits)
        nodes += more
        nodes.append(helper.make_node("Identity", [fg], ["prob_logits"]))
    return checkpoint_model(
        nodes, inits, f"synthetic_rgb_ckpt_{idx:02d}", ("input", 3), ("prob_logits", 1),
        f"synthetic rgb/sigmoid checkpoint {idx:02d}: params={params}",
    )


# --------------------------------------------------------------------------------------
# Tiny UniverSeg-contract model
# --------------------------------------------------------------------------------------
TINY_H = 0.01  # similarity bandwidth
TINY_K = 10.0  # logit gain
TINY_OFFSET = 0.4


def universeg_tiny_model() -> onnx.ModelProto:
    """Global-similarity weighted vote obeying the UniverSeg I/O contract.

    d_s = mean((target - support_image_s)^2); w = softmax_s(-d_s / h)  (== exp(-d/h)/sum exp(-d/h))
    logits = k * (sum_s w_s * support_label_s - 0.4)
    Support batch dim 'Bs' may be B or 1 (broadcast).
    """
    inits = [
        numpy_helper.from_array(np.array([1], np.int64), "ax1"),
        numpy_helper.from_array(np.array(-1.0 / TINY_H, np.float32), "neg_inv_h"),
        numpy_helper.from_array(np.array(TINY_OFFSET, np.float32), "offset"),
        numpy_helper.from_array(np.array(TINY_K, np.float32), "gain"),
    ]
    nodes = [
        helper.make_node("Unsqueeze", ["target", "ax1"], ["t5"]),  # [B,1,1,H,W]
        helper.make_node("Sub", ["t5", "support_images"], ["diff"]),  # [B,S,1,H,W]
        helper.make_node("Mul", ["diff", "diff"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["msd"], axes=[2, 3, 4], keepdims=1),  # [B,S,1,1,1]
        helper.make_node("Mul", ["msd", "neg_inv_h"], ["score"]),
        helper.make_node("Softmax", ["score"], ["w"], axis=1),
        helper.make_node("Mul", ["w", "support_labels"], ["wl"]),  # [B,S,1,H,W]
        helper.make_node("ReduceSum", ["wl", "ax1"], ["fused"], keepdims=0),  # [B,1,H,W]
        helper.make_node("Sub", ["fused", "offset"], ["centred"]),
        helper.make_node("Mul", ["centred", "gain"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "universeg_tiny",
        [
            helper.make_tensor_value_info("target", TensorProto.FLOAT, ["B", 1, H, W]),
            helper.make_tensor_value_info("support_images", TensorProto.FLOAT, ["Bs", "S", 1, H, W]),
            helper.make_tensor_value_info("support_labels", TensorProto.FLOAT, ["Bs", "S", 1, H, W]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", 1, H, W])],
        inits,
    )
    return finish_model(graph, "tiny UniverSeg-contract model: global-similarity weighted label vote")


def universeg_tiny_numpy(target, sup_img, sup_lab):
    t = target.astype(np.float64)[:, None]  # [B,1,1,H,W]
    d = ((t - sup_img.astype(np.float64)) ** 2).mean(axis=(2, 3, 4), keepdims=True)  # [B,S,1,1,1]
    s = -d / TINY_H
    s = s - s.max(axis=1, keepdims=True)
    w = np.exp(s)
    w = w / w.sum(axis=1, keepdims=True)
    fused = (w * sup_lab.astype(np.float64)).sum(axis=1)  # [B,1,H,W]
    return TINY_K * (fused - TINY_OFFSET)


def check_universeg_tiny(path: Path):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(7)
    worst = 0.0
    for b in (1, 3):
        for s in (1, 5):
            for bs in sorted({1, b}):
                t = rng.random((b, 1, H, W), dtype=np.float32)
                si = rng.random((bs, s, 1, H, W), dtype=np.float32)
                sl = (rng.random((bs, s, 1, H, W)) > 0.5).astype(np.float32)
                # make supports differ in similarity so the softmax is not flat
                si = (si * rng.uniform(0.2, 1.0, (bs, s, 1, 1, 1))).astype(np.float32)
                (out,) = sess.run(["logits"], {"target": t, "support_images": si, "support_labels": sl})
                assert out.shape == (b, 1, H, W), (out.shape, b)
                ref = universeg_tiny_numpy(t, si, sl)
                err = float(np.abs(out - ref).max())
                worst = max(worst, err)
                assert err < 1e-4, f"universeg_tiny mismatch B={b} S={s} Bs={bs}: {err}"
    return worst


# --------------------------------------------------------------------------------------
# Corrupt inputs
# --------------------------------------------------------------------------------------
def wrong_signature_model() -> onnx.ModelProto:
    inits = [numpy_helper.from_array(np.array([[[[1.0]]], [[[-1.0]]]], np.float32), "w")]
    nodes = [helper.make_node("Conv", ["foo", "w"], ["bar"])]
    graph = helper.make_graph(
        nodes,
        "wrong_signature",
        [helper.make_tensor_value_info("foo", TensorProto.FLOAT, ["N", 1, 64, 64])],
        [helper.make_tensor_value_info("bar", TensorProto.FLOAT, ["N", 2, 64, 64])],
        inits,
    )
    return finish_model(graph, "valid model with the wrong I/O names and size")


def write_corrupt(out: Path, sample_png: bytes):
    d = out / "corrupt"
    d.mkdir(parents=True, exist_ok=True)
    (d / "truncated.png").write_bytes(sample_png[: len(sample_png) // 2])
    (d / "not_an_image.png").write_bytes(b"This is a plain text file with a .png extension, not an image.\n")
    (d / "zero_bytes.png").write_bytes(b"")
    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0)
    tiny_idat = zlib.compress(b"\x00" * 64, 9)  # far fewer bytes than 60000 rows need
    (d / "huge_dims.png").write_bytes(PNG_SIG + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", tiny_idat) + _chunk(b"IEND", b""))
    save_model(wrong_signature_model(), d / "wrong_signature.onnx")
    (d / "garbage.onnx").write_bytes(np.random.default_rng(99).integers(0, 256, 4096, dtype=np.uint8).tobytes())


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------
GRAY_SPEC = {"input": {"name": "image", "channels": 1, "scale": "unit"},
             "output": {"name": "logits", "kind": "argmax", "foreground_class": 1}}
RGB_SPEC = {"input": {"name": "input", "channels": 3, "scale": "raw"},
            "output": {"name": "prob_logits", "kind": "sigmoid", "threshold": 0.5}}


def write_json(path: Path, obj):
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def run_gray(sess, imgs):
    x = np.stack([i.astype(np.float32) / 255.0 for i in imgs])[:, None]
    (lg,) = sess.run(["logits"], {"image": x})
    assert lg.shape == (len(imgs), 2, H, W)
    return lg.argmax(axis=1) == 1


def run_rgb(sess, imgs):
    x = np.stack([np.repeat(i.astype(np.float32)[None], 3, axis=0) for i in imgs])
    (lg,) = sess.run(["prob_logits"], {"input": x})
    assert lg.shape == (len(imgs), 1, H, W)
    return 0.5 * (1.0 + np.tanh(lg[:, 0].astype(np.float64) / 2.0)) > 0.5  # sigmoid, overflow-free


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "tests" / "fixtures")
    ap.add_argument("--skip-pseudo", action="store_true", help="skip the (slow-ish) label-fusion summary")
    args = ap.parse_args(argv)
    out: Path = args.out
    syn = out / "synthetic"
    if syn.exists():
        shutil.rmtree(syn)
    # corrupt/'s subfolders (malformed DICOM, NIfTI, ... files) belong to the Rust corpus generator.
    for p in (out / "corrupt").glob("*"):
        if p.is_file():
            p.unlink()
    syn.mkdir(parents=True)

    # 1. datasets
    data = {name: make_split(name) for name in SPLITS}
    for name, cases in data.items():
        for i, (img, lab) in enumerate(cases):
            fname = f"{name[:3]}_{i:03d}.png"
            lab_png = png_bytes(np.where(lab, 255, 0).astype(np.uint8))
            if name == "batch":
                img_dir, lab_dir = syn / "batch", syn / "batch_labels"
            else:
                img_dir, lab_dir = syn / name / "images", syn / name / "labels"
            img_dir.mkdir(parents=True, exist_ok=True)
            lab_dir.mkdir(parents=True, exist_ok=True)
            (img_dir / fname).write_bytes(png_bytes(img))
            (lab_dir / fname).write_bytes(lab_png)
    # round-trip one image and one label through the decoder
    img0, lab0 = data["calibration"][0]
    assert np.array_equal(png_read_gray((syn / "calibration/images/cal_000.png").read_bytes()), img0)
    assert np.array_equal(png_read_gray((syn / "calibration/labels/cal_000.png").read_bytes()) > 127, lab0)

    # 2./3. checkpoints + specs
    for i, p in enumerate(GRAY_CKPTS):
        save_model(gray_argmax_model(p, i), syn / "checkpoints" / f"ckpt_{i:02d}.onnx")
    for i, p in enumerate(RGB_CKPTS):
        save_model(rgb_sigmoid_model(p, i), syn / "checkpoints_rgb_sigmoid" / f"ckpt_{i:02d}.onnx")
    write_json(syn / "spec_gray_argmax.json", GRAY_SPEC)
    write_json(syn / "spec_rgb_sigmoid.json", RGB_SPEC)

    # 4. tiny UniverSeg
    tiny_path = out / "universeg_tiny.onnx"
    save_model(universeg_tiny_model(), tiny_path)
    tiny_err = check_universeg_tiny(tiny_path)
    print(f"universeg_tiny.onnx: onnxruntime vs numpy max abs err {tiny_err:.2e} (B in 1,3; S in 1,5; Bs in 1,B)")

    # 5. corrupt inputs
    write_corrupt(out, (syn / "calibration/images/cal_000.png").read_bytes())

    # Real metrics of every checkpoint (from onnxruntime outputs) -> checkpoint_metrics.json
    import onnxruntime as ort

    metrics = {"note": "mean Dice (docs/method.md definition) of each checkpoint's onnxruntime predictions "
                       "against the true labels; per-image values in the same order as the sorted file names",
               "checkpoints": {}, "checkpoints_rgb_sigmoid": {}}
    fam = [("checkpoints", GRAY_CKPTS, run_gray), ("checkpoints_rgb_sigmoid", RGB_CKPTS, run_rgb)]
    preds_for_pseudo = {}
    for folder, plist, runner in fam:
        for i, _ in enumerate(plist):
            sess = ort.InferenceSession(str(syn / folder / f"ckpt_{i:02d}.onnx"), providers=["CPUExecutionProvider"])
            entry = {}
            for split in ("calibration", "batch", "reference"):
                imgs = [c[0] for c in data[split]]
                preds = runner(sess, imgs)
                exact = np.stack([checkpoint_numpy(plist[i], im) for im in imgs])
                nbad = int((exact != preds).sum())
                assert nbad == 0, f"{folder}/ckpt_{i:02d} on {split}: {nbad} pixels differ from the numpy reference"
                per = [dice(l, p) for (_, l), p in zip(data[split], preds)]
                entry[split] = {"mean_dice": round(float(np.mean(per)), 6),
                                "per_image_dice": [round(float(v), 6) for v in per],
                                "foreground_pixels": [int(p.sum()) for p in preds]}
                if split == "calibration":
                    preds_for_pseudo[(folder, i)] = preds
            metrics[folder][f"ckpt_{i:02d}"] = entry
    write_json(syn / "checkpoint_metrics.json", metrics)

    # Summary (printed only)
    print("\nreal mean Dice (onnxruntime predictions vs truth):")
    print(f"{'model':34s} {'calibration':>11s} {'batch':>7s} {'reference':>9s} {'pseudo(LF)':>10s}")
    ref_imgs = [c[0] for c in data["reference"]]
    ref_labs = [c[1] for c in data["reference"]]
    cal_imgs = [c[0] for c in data["calibration"]]
    for folder, plist, _ in fam:
        for i, _ in enumerate(plist):
            e = metrics[folder][f"ckpt_{i:02d}"]
            pseudo = "-"
            if not args.skip_pseudo:
                preds = preds_for_pseudo[(folder, i)]
                keep = [j for j, p in enumerate(preds) if p.sum() >= 20]
                if keep:
                    si = [cal_imgs[j] for j in keep]
                    sl = [preds[j] for j in keep]
                    pseudo = f"{np.mean([dice(l, label_fusion(q, si, sl)) for q, l in zip(ref_imgs, ref_labs)]):.3f}"
            print(f"{folder + '/ckpt_%02d' % i:34s} {e['calibration']['mean_dice']:11.3f} "
                  f"{e['batch']['mean_dice']:7.3f} {e['reference']['mean_dice']:9.3f} {pseudo:>10s}")
    if not args.skip_pseudo:
        lf = np.mean([dice(l, label_fusion(q, cal_imgs, [c[1] for c in data["calibration"]]))
                      for q, l in zip(ref_imgs, ref_labs)])
        print(f"label fusion of reference with the 16 true calibration labels: mean Dice {lf:.3f}")
        sess = ort.InferenceSession(str(tiny_path), providers=["CPUExecutionProvider"])
        t = np.stack([minmax(q) for q in ref_imgs]).astype(np.float32)[:, None]
        si = np.stack([minmax(s) for s in cal_imgs]).astype(np.float32)[None, :, None]
        sl = np.stack([c[1] for c in data["calibration"]]).astype(np.float32)[None, :, None]
        (lg,) = sess.run(["logits"], {"target": t, "support_images": si, "support_labels": sl})
        m = 1 / (1 + np.exp(-lg[:, 0])) > 0.4
        print(f"universeg_tiny on reference with the 16 true calibration labels (sigmoid>0.4): "
              f"mean Dice {np.mean([dice(l, p) for l, p in zip(ref_labs, m)]):.3f}")

    # Sizes + hashes
    total = 0
    lines = []
    for p in sorted(out.rglob("*")):
        if p.is_file() and (p.is_relative_to(syn) or p.parent == out / "corrupt" or p == tiny_path):
            total += p.stat().st_size
            lines.append(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(out)}")
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    print(f"\n{len(lines)} files, {total / 1024:.1f} KiB total; combined sha256 {digest}")
    assert total < 3 * 1024 * 1024, "fixtures exceed 3 MB"
    for folder in ("checkpoints", "checkpoints_rgb_sigmoid"):
        for p in (syn / folder).glob("*.onnx"):
            assert p.stat().st_size < 50 * 1024, p
    return 0


if __name__ == "__main__":
    sys.exit(main())
