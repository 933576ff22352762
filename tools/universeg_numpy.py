"""Independent numpy reference of the UniverSeg v1 forward pass (for tests of the ONNX export).

Deliberately simple: every (target, support) pair is handled in an explicit Python loop,
convolutions are im2col + tensordot in float64. It shares nothing with the ONNX builder in
export_universeg.py except the state-dict key names:

    enc_blocks.{0..3}.cross.cross_conv.{weight,bias}          3x3 conv over concat(target, support)
    enc_blocks.{0..3}.target.vmapped.conv.{weight,bias}       3x3 conv + LeakyReLU(0.01)
    enc_blocks.{0..3}.support.vmapped.conv.{weight,bias}      3x3 conv + LeakyReLU(0.01)
    dec_blocks.{0..2}.(same three)
    out_conv.conv.{weight,bias}                                1x1 conv to 1 channel

Shapes: target [B,1,H,W]; support_images / support_labels [Bs,S,1,H,W] with Bs in {1, B};
result: logits [B,1,H,W].
"""
from __future__ import annotations

import numpy as np

N_ENC = 4
N_DEC = 3
LEAK = 0.01


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x [C,H,W], w [O,C,k,k] (odd k, zero padding k//2, stride 1), b [O] -> [O,H,W]."""
    c, h, wd = x.shape
    k = w.shape[-1]
    p = k // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p)))
    cols = np.empty((c, k, k, h, wd), x.dtype)  # im2col: cols[c, i, j] = x shifted by (i - p, j - p)
    for i in range(k):
        for j in range(k):
            cols[:, i, j] = xp[:, i:i + h, j:j + wd]
    out = w.reshape(w.shape[0], -1) @ cols.reshape(c * k * k, h * wd)
    return out.reshape(w.shape[0], h, wd) + b[:, None, None]


def leaky(x: np.ndarray) -> np.ndarray:
    return np.where(x >= 0, x, LEAK * x)


def maxpool2(x: np.ndarray) -> np.ndarray:
    c, h, w = x.shape
    return x.reshape(c, h // 2, 2, w // 2, 2).max(axis=(2, 4))


def _interp_matrix(n: int) -> np.ndarray:
    """[2n, n] bilinear interpolation matrix, align_corners=True."""
    m = 2 * n
    mat = np.zeros((m, n))
    for i in range(m):
        src = i * (n - 1) / (m - 1) if m > 1 else 0.0
        j0 = int(np.floor(src))
        j1 = min(j0 + 1, n - 1)
        f = src - j0
        mat[i, j0] += 1 - f
        mat[i, j1] += f
    return mat


def upsample2(x: np.ndarray) -> np.ndarray:
    _, h, w = x.shape
    mh, mw = _interp_matrix(h), _interp_matrix(w)
    return mh @ x @ mw.T  # [2h,h] @ [C,h,w] @ [w,2w], batched over C


def cross_block(sd, prefix: str, t: np.ndarray, sups: list, need_support: bool = True):
    wc, bc = sd[prefix + ".cross.cross_conv.weight"], sd[prefix + ".cross.cross_conv.bias"]
    pairs = [conv2d(np.concatenate([t, s], axis=0), wc, bc) for s in sups]  # target channels first
    new_t = np.mean(pairs, axis=0)
    new_t = leaky(conv2d(new_t, sd[prefix + ".target.vmapped.conv.weight"], sd[prefix + ".target.vmapped.conv.bias"]))
    if not need_support:
        return new_t, None
    ws, bs = sd[prefix + ".support.vmapped.conv.weight"], sd[prefix + ".support.vmapped.conv.bias"]
    new_s = [leaky(conv2d(p, ws, bs)) for p in pairs]
    return new_t, new_s


def forward_one(sd, target: np.ndarray, sup_imgs: np.ndarray, sup_labs: np.ndarray) -> np.ndarray:
    """target [1,H,W], sup_imgs/sup_labs [S,1,H,W] -> logits [1,H,W]."""
    t = target
    sups = [np.concatenate([sup_imgs[i], sup_labs[i]], axis=0) for i in range(sup_imgs.shape[0])]  # image, label
    skips = []
    for i in range(N_ENC):
        t, sups = cross_block(sd, f"enc_blocks.{i}", t, sups)
        if i < N_ENC - 1:
            skips.append((t, sups))
            t = maxpool2(t)
            sups = [maxpool2(s) for s in sups]
    for i in range(N_DEC):
        t_skip, s_skip = skips.pop()
        t = np.concatenate([upsample2(t), t_skip], axis=0)  # upsampled first, then the skip
        sups = [np.concatenate([upsample2(s), k], axis=0) for s, k in zip(sups, s_skip)]
        t, sups = cross_block(sd, f"dec_blocks.{i}", t, sups, need_support=(i < N_DEC - 1))
    return conv2d(t, sd["out_conv.conv.weight"], sd["out_conv.conv.bias"])


def forward(sd, target, support_images, support_labels) -> np.ndarray:
    """Batched wrapper: target [B,1,H,W]; supports [Bs,S,1,H,W] (Bs = B or 1)."""
    sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}
    target = np.asarray(target, np.float64)
    support_images = np.asarray(support_images, np.float64)
    support_labels = np.asarray(support_labels, np.float64)
    b = target.shape[0]
    bs = support_images.shape[0]
    if bs not in (1, b):
        raise ValueError(f"support batch {bs} must be 1 or {b}")
    outs = []
    for i in range(b):
        j = i if bs == b else 0
        outs.append(forward_one(sd, target[i], support_images[j], support_labels[j]))
    return np.stack(outs)
