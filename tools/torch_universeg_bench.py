#!/usr/bin/env python3
"""PyTorch reference of UniverSeg v1 (the straightforward code path) for the GPU benchmark of issue 4.

Written from the architecture description in docs/method.md, with the official state-dict key names so the
same weights load here, in tools/export_universeg.py and in tools/universeg_numpy.py:

    python3 tools/torch_universeg_bench.py --write-weights w.npz --random-weights 0   # make the weights
    python3 tools/torch_universeg_bench.py --weights w.npz                          # time it (CUDA)
    python3 tools/torch_universeg_bench.py --weights w.npz --check-onnx a.onnx b.onnx --rust-dump DIR

Reference code path: every CrossBlock concatenates the target features with each support's features and
runs the 3x3 cross conv on all (target, support) pairs, [B*S, Ct+Cs, H, W] at once; target' = LeakyReLU(conv(
mean over S)); support' = LeakyReLU(conv(pair)), computed in every block including the last decoder block
(as the reference code does; --skip-last-support drops it). Timing: fp32, TF32 allowed, cudnn.benchmark on,
batch 1 by default (--batch 1,8 for more), S=64.

Checks (fp32, TF32 off, on the same device):
  --check-onnx M.onnx ...  runs each graph through the onnxruntime importable here (CUDA EP when this
                           onnxruntime has it, else CPU) on B=2, S=3 and compares logits with torch:
                           max|diff| / max|torch| <= 1e-4 (float32 graph) or 2e-2 (float16 graph).
  --rust-dump DIR ...      the inputs and masks written by the Rust bench (`gpu_universeg --dump DIR`):
                           torch masks (sigmoid > threshold) vs the Rust masks, pixel agreement and Dice.
  --decomposed-batch B     checks the decomposed PyTorch path (cross conv split into target and support
                           parts, as the decomposed graph) against the reference, then times it in fp16 at
                           batch B, NCHW and channels-last (--profile: its top CUDA kernels).
Exit status 1 when a check fails.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

N_FEAT = 64
N_ENC = 4
N_DEC = 3
LEAK = 0.01


def write_weights(path: Path, seed: int) -> None:
    """The export tool's random state dict (same generator, same keys) saved as .npz."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from export_universeg import random_state_dict  # noqa: WPS433 (imports onnx too)

    sd = random_state_dict(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **sd)
    print(f"wrote {path}: {len(sd)} tensors, {sum(v.size for v in sd.values())} parameters (seed {seed})")


def build_model(torch, nn):
    class Conv(nn.Module):
        """Holds `.conv` (key `<prefix>.conv.weight`)."""

        def __init__(self, cin, cout, k=3):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, k, padding=k // 2)

    class Vmapped(nn.Module):
        """Conv + LeakyReLU applied to every item of a [N, C, H, W] batch (key `<prefix>.vmapped.conv...`)."""

        def __init__(self, cin, cout):
            super().__init__()
            self.vmapped = Conv(cin, cout)

        def forward(self, x):
            return nn.functional.leaky_relu(self.vmapped.conv(x), LEAK)

    class Cross(nn.Module):
        def __init__(self, ct, cs):
            super().__init__()
            self.cross_conv = nn.Conv2d(ct + cs, N_FEAT, 3, padding=1)

        def forward(self, t, s):
            """t [B, Ct, H, W]; s [B, S, Cs, H, W] -> pairs [B, S, 64, H, W] (no activation)."""
            b, n = s.shape[:2]
            h, w = t.shape[-2:]
            pair = torch.cat([t.unsqueeze(1).expand(b, n, *t.shape[1:]), s], dim=2)  # target channels first
            y = self.cross_conv(pair.reshape(b * n, -1, h, w))
            return y.reshape(b, n, N_FEAT, h, w)

    class CrossBlock(nn.Module):
        def __init__(self, ct, cs):
            super().__init__()
            self.cross = Cross(ct, cs)
            self.target = Vmapped(N_FEAT, N_FEAT)
            self.support = Vmapped(N_FEAT, N_FEAT)

        def forward(self, t, s, need_support=True):
            pair = self.cross(t, s)
            b, n, c, h, w = pair.shape
            t_new = self.target(pair.mean(dim=1))
            s_new = self.support(pair.reshape(b * n, c, h, w)).reshape(b, n, c, h, w) if need_support else None
            return t_new, s_new

    class UniverSegV1(nn.Module):
        def __init__(self, skip_last_support=False):
            super().__init__()
            self.skip_last_support = skip_last_support
            self.enc_blocks = nn.ModuleList(
                [CrossBlock(1, 2)] + [CrossBlock(N_FEAT, N_FEAT) for _ in range(N_ENC - 1)])
            self.dec_blocks = nn.ModuleList([CrossBlock(2 * N_FEAT, 2 * N_FEAT) for _ in range(N_DEC)])
            self.out_conv = Conv(N_FEAT, 1, k=1)

        @staticmethod
        def _per_item(fn, x):  # [B, S, C, H, W] -> fn on [B*S, C, H, W]
            b, n = x.shape[:2]
            y = fn(x.reshape(b * n, *x.shape[2:]))
            return y.reshape(b, n, *y.shape[1:])

        def forward(self, target, support_images, support_labels):
            """target [B,1,H,W]; support_* [B or 1, S, 1, H, W] -> logits [B,1,H,W]."""
            b = target.shape[0]
            s = torch.cat([support_images, support_labels], dim=2)  # image, label
            if s.shape[0] != b:
                s = s.expand(b, *s.shape[1:])
            t = target
            pool = lambda x: nn.functional.max_pool2d(x, 2)  # noqa: E731
            up = lambda x: nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)  # noqa: E731
            skips = []
            for i, block in enumerate(self.enc_blocks):
                t, s = block(t, s)
                if i < N_ENC - 1:
                    skips.append((t, s))
                    t, s = pool(t), self._per_item(pool, s)
            for i, block in enumerate(self.dec_blocks):
                t_skip, s_skip = skips.pop()
                t = torch.cat([up(t), t_skip], dim=1)  # upsampled first, then the skip
                s = torch.cat([self._per_item(up, s), s_skip], dim=2)
                need = not (self.skip_last_support and i == N_DEC - 1)
                t, s = block(t, s, need_support=need)
            return self.out_conv.conv(t)

    return UniverSegV1


def build_decomposed(torch, nn, reference, channels_last: bool):
    """The decomposed graph's computation in plain PyTorch, sharing `reference`'s parameters: the cross conv
    split into a target part (once per target) and a support part (once per support), broadcast add, no work
    for the last block's support branch. Optionally channels-last. It bounds what well-fused kernels reach on
    this card, so the ONNX Runtime figures can be read against it."""
    F = nn.functional
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    class Decomposed(nn.Module):
        def __init__(self):
            super().__init__()
            self.ref = reference
            self.split = []  # per block: (ct, target part, support part) of the cross-conv kernel
            for blk, (ct, _) in zip(list(reference.enc_blocks) + list(reference.dec_blocks),
                                    [(1, 2)] + [(N_FEAT, N_FEAT)] * (N_ENC - 1) + [(2 * N_FEAT, 2 * N_FEAT)] * N_DEC):
                w = blk.cross.cross_conv.weight
                self.split.append((w[:, :ct].contiguous(memory_format=fmt),
                                   w[:, ct:].contiguous(memory_format=fmt)))

        def block(self, i, blk, t, s4, n, last):
            wt, ws = self.split[i]
            ta = F.conv2d(t, wt, blk.cross.cross_conv.bias, padding=1)  # [B,64,h,w]
            sa = F.conv2d(s4, ws, None, padding=1)  # [Bsup*n,64,h,w]
            h, w = sa.shape[-2:]
            sa5 = sa.view(-1, n, N_FEAT, h, w)
            t_new = F.leaky_relu(blk.target.vmapped.conv(ta + sa5.mean(1)), LEAK)
            if last:
                return t_new, None
            y = (ta.unsqueeze(1) + sa5).reshape(-1, N_FEAT, h, w).contiguous(memory_format=fmt)
            return t_new, F.leaky_relu(blk.support.vmapped.conv(y), LEAK)

        def forward(self, target, support_images, support_labels):
            s = torch.cat([support_images, support_labels], dim=2)  # [Bs,S,2,H,W]
            n = s.shape[1]
            s4 = s.reshape(-1, *s.shape[2:]).contiguous(memory_format=fmt)
            t = target.contiguous(memory_format=fmt)
            up = lambda x: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)  # noqa: E731
            blocks = list(self.ref.enc_blocks) + list(self.ref.dec_blocks)
            skips = []
            for i in range(N_ENC):
                t, s4 = self.block(i, blocks[i], t, s4, n, last=False)
                if i < N_ENC - 1:
                    skips.append((t, s4))
                    t, s4 = F.max_pool2d(t, 2), F.max_pool2d(s4, 2)
            for i in range(N_DEC):
                t_skip, s_skip = skips.pop()
                t = torch.cat([up(t), t_skip], dim=1)
                s4 = torch.cat([up(s4), s_skip], dim=1)
                t, s4 = self.block(N_ENC + i, blocks[N_ENC + i], t, s4, n, last=i == N_DEC - 1)
            return self.ref.out_conv.conv(t)

    return Decomposed()


def load_model(torch, nn, weights: Path, device, skip_last_support=False):
    with np.load(weights, allow_pickle=False) as z:
        sd = {k: torch.from_numpy(np.asarray(z[k], np.float32)) for k in z.files}
    model = build_model(torch, nn)(skip_last_support)
    # The reference code computes the last decoder block's support branch, so its weights are there too.
    model.load_state_dict(sd, strict=True)  # missing or extra keys raise
    n = sum(p.numel() for p in model.parameters())
    return model.to(device).eval(), n


def synthetic_inputs(torch, b, s, device, seed=0, size=128):
    g = np.random.default_rng(seed)
    t = g.random((b, 1, size, size), dtype=np.float32)
    si = g.random((1, s, 1, size, size), dtype=np.float32)
    sl = (g.random((1, s, 1, size, size)) > 0.5).astype(np.float32)
    return t, si, sl


def sync(torch, device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_model(torch, model, device, batch, supports, iters, warmup, dtype=None):
    t, si, sl = (torch.from_numpy(a).to(device, dtype or torch.float32)
                 for a in synthetic_inputs(torch, batch, supports, device, seed=1))
    with torch.inference_mode():
        for _ in range(warmup):
            model(t, si, sl)
        sync(torch, device)
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            model(t, si, sl)
            sync(torch, device)
            times.append(time.perf_counter() - start)
    times.sort()
    med = times[len(times) // 2] if len(times) % 2 else 0.5 * (times[len(times) // 2 - 1] + times[len(times) // 2])
    return 1e3 * med / batch, 1e3 * times[0] / batch


def run_decomposed(torch, nn, model, device, args) -> bool:
    """Checks the decomposed PyTorch path against the reference (fp32, B=2, S=3), then times it in fp16 at
    --decomposed-batch, NCHW and channels-last; --profile prints the top CUDA kernels of the channels-last run."""
    import copy

    t, si, sl = (torch.from_numpy(a).to(device) for a in synthetic_inputs(torch, 2, 3, device, seed=3))
    with torch.inference_mode():
        ref = model(t, si, sl).double()
        got = build_decomposed(torch, nn, model, channels_last=True)(t, si, sl).double()
    err = float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12))
    ok = err <= 1e-4
    print(f"check-decomposed: torch decomposed channels-last vs reference, fp32, B=2 S=3: max|diff|/max = {err:.2e} "
          f"{'PASS' if ok else 'FAIL'}")
    half = copy.deepcopy(model).half()
    b = args.decomposed_batch
    for channels_last in (False, True):
        fast = build_decomposed(torch, nn, half, channels_last)
        label = f"torch decomposed fp16 {'channels-last' if channels_last else 'NCHW'}"
        try:
            med, best = time_model(torch, fast, device, b, args.supports, args.iters, args.warmup, torch.float16)
        except RuntimeError as e:
            print(f"{label} batch {b}: FAILED ({str(e).splitlines()[0]})")
            ok = False
            continue
        print(f"{label} ms per query {med:.3f} (median of {args.iters}; best {best:.3f}) at S={args.supports}, "
              f"batch {b}")
        if channels_last and args.profile and device.type == "cuda":
            try:  # diagnostics only: a profiler problem must not cost the timings that follow
                profile(torch, fast, device, b, args.supports)
            except Exception as e:  # noqa: BLE001
                print(f"profile: FAILED ({type(e).__name__}: {e})")
    return ok


def profile(torch, model, device, batch, supports):
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    t, si, sl = (torch.from_numpy(a).to(device, torch.float16)
                 for a in synthetic_inputs(torch, batch, supports, device, seed=1))
    with torch.inference_mode(), torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            model(t, si, sl)
        sync(torch, device)
    def device_us(e):  # the attribute's name changed across torch versions
        return getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)

    events = [e for e in prof.key_averages() if device_us(e) > 0]
    total = sum(device_us(e) for e in events) or 1
    print(f"profile (3 forward passes, batch {batch}): CUDA time {total / 3e3 / batch:.3f} ms per query; top kernels:")
    for e in sorted(events, key=lambda e: -device_us(e))[:15]:
        us = device_us(e)
        print(f"  {100 * us / total:5.1f}%  {us / 3e3 / batch:7.3f} ms/query  x{e.count // 3:<4} {e.key[:110]}")


def check_onnx(torch, model, device, path: Path) -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        print(f"check-onnx {path}: SKIPPED (onnxruntime is not importable)")
        return True
    avail = ort.get_available_providers()
    providers = (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in avail and device.type == "cuda" else []) + [
        "CPUExecutionProvider"]
    try:
        sess = ort.InferenceSession(str(path), providers=providers)
    except Exception as e:  # noqa: BLE001
        print(f"check-onnx {path}: FAIL (cannot load with {providers}: {e})")
        return False
    half = sess.get_inputs()[0].type == "tensor(float16)"
    t, si, sl = synthetic_inputs(torch, 2, 3, device, seed=7)
    dt = np.float16 if half else np.float32
    try:
        (out,) = sess.run(["logits"], {"target": t.astype(dt), "support_images": si.astype(dt),
                                       "support_labels": sl.astype(dt)})
    except Exception as e:  # noqa: BLE001
        print(f"check-onnx {path}: FAIL (run: {e})")
        return False
    with torch.inference_mode():
        ref = model(*(torch.from_numpy(a).to(device) for a in (t, si, sl))).double().cpu().numpy()
    err = float(np.abs(out.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-12))
    tol = 2e-2 if half else 1e-4
    ok = err <= tol and np.isfinite(out).all()
    print(f"check-onnx {path.name}: onnxruntime {ort.__version__} on {sess.get_providers()[0]}, "
          f"{'float16' if half else 'float32'} graph, B=2 S=3: max|diff|/max|torch| = {err:.2e} "
          f"(tolerance {tol:.0e}) {'PASS' if ok else 'FAIL'}")
    return bool(ok)


def check_rust_dump(torch, model, device, d: Path, threshold: float) -> bool:
    if not (d / "masks.npy").is_file():
        print(f"check-rust-dump {d}: FAIL (no dump there: the Rust run did not write one)")
        return False
    si, sl, q, masks = (np.load(d / f) for f in ("support_images.npy", "support_labels.npy", "queries.npy",
                                                  "masks.npy"))
    if (d / "meta.json").is_file():  # the threshold the Rust run used
        threshold = float(json.loads((d / "meta.json").read_text())["threshold"])
    cut = math.log(threshold / (1 - threshold))
    outs = []
    with torch.inference_mode():
        sit, slt = (torch.from_numpy(a).to(device)[None] for a in (si, sl))
        for i in range(0, q.shape[0], 4):
            outs.append(model(torch.from_numpy(q[i:i + 4]).to(device), sit, slt).cpu().numpy())
    logits = np.concatenate(outs)[:, 0]
    mine = logits > cut
    rust = masks.astype(bool)
    agree = float((mine == rust).mean())
    inter = float((mine & rust).sum())
    denom = float(mine.sum() + rust.sum())
    dice = 2 * inter / denom if denom else 1.0
    # pixels that disagree although torch is far from the threshold point at a real bug, not fp16 rounding
    far = float(((mine != rust) & (np.abs(logits - cut) > 0.5)).mean())
    ok = agree >= 0.99 and dice >= 0.98 and far <= 1e-3
    print(f"check-rust-dump {d}: {q.shape[0]} queries, S={si.shape[0]}, threshold {threshold:g}: torch fp32 vs Rust "
          f"masks: pixel agreement {agree:.5f}, Dice {dice:.5f}, disagreeing with |logit - cut| > 0.5: {far:.2e}; "
          f"foreground torch {mine.mean():.3f} / Rust {rust.mean():.3f} {'PASS' if ok else 'FAIL'}")
    if not 0.05 <= mine.mean() <= 0.95:
        med = float(np.median(logits))
        print(f"  (weak check: foreground {mine.mean():.3f}; a threshold of {1 / (1 + math.exp(-med)):.4g} = "
              f"sigmoid(median logit) splits these pixels in half)")
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, help=".npz state dict (official key names)")
    ap.add_argument("--write-weights", type=Path, help="write --random-weights SEED as .npz and exit")
    ap.add_argument("--random-weights", type=int, default=0, metavar="SEED")
    ap.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    ap.add_argument("--supports", type=int, default=64)
    ap.add_argument("--batch", default="1", help="comma-separated batch sizes to time (default 1)")
    ap.add_argument("--iters", type=int, default=30, help="timed forward passes per batch size")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--no-tf32", action="store_true")
    ap.add_argument("--skip-last-support", action="store_true",
                    help="drop the last decoder block's support branch (unused by the output)")
    ap.add_argument("--check-onnx", type=Path, nargs="*", default=[])
    ap.add_argument("--rust-dump", type=Path, nargs="*", default=[])
    ap.add_argument("--decomposed-batch", type=int, default=0, metavar="B",
                    help="also time the decomposed PyTorch path in fp16 (NCHW and channels-last) at batch B")
    ap.add_argument("--profile", action="store_true", help="with --decomposed-batch: top CUDA kernels")
    ap.add_argument("--threshold", type=float, default=0.4)
    args = ap.parse_args(argv)

    if args.write_weights:
        write_weights(args.write_weights, args.random_weights)
        return 0
    if not args.weights:
        ap.error("--weights is required (or --write-weights)")

    import torch
    from torch import nn

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__} on {device} ({name})")
    torch.backends.cudnn.benchmark = True
    model, n = load_model(torch, nn, args.weights, device, args.skip_last_support)
    print(f"UniverSeg v1 reference (per-pair concat cross conv), {n} parameters from {args.weights}"
          f"{', last decoder support branch skipped' if args.skip_last_support else ''}")

    ok = True
    # Checks first, exact fp32 (no TF32).
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    for p in args.check_onnx:
        ok &= check_onnx(torch, model, device, p)
    for d in args.rust_dump:
        ok &= check_rust_dump(torch, model, device, d, args.threshold)

    if args.decomposed_batch > 0 and args.iters > 0:
        ok &= run_decomposed(torch, nn, model, device, args)

    tf32 = not args.no_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    for b in [int(x) for x in args.batch.split(",") if x]:
        if args.iters <= 0:
            break
        try:
            med, best = time_model(torch, model, device, b, args.supports, args.iters, args.warmup)
        except RuntimeError as e:  # e.g. out of memory at a large batch
            print(f"torch batch {b}: FAILED ({str(e).splitlines()[0]})")
            ok = False
            continue
        print(f"torch reference ms per query {med:.3f} (median of {args.iters}; best {best:.3f}) at S={args.supports}, "
              f"batch {b}, fp32{' + TF32' if tf32 else ''}, {device} ({name})")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
