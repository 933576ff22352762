#!/usr/bin/env python3
"""Build the UniverSeg v1 network as an ONNX graph that obeys the SPE reverse-segmenter contract.

    .venv/bin/python tools/export_universeg.py --weights universeg_v1.safetensors --out universeg.onnx
    .venv/bin/python tools/export_universeg.py --random-weights 0 --form naive --dtype float16 --out x.onnx

No PyTorch is needed: the graph is written op by op with the `onnx` helpers, the weights come
from a state dict stored as .npz, .safetensors (parsed here: u64 header length + JSON header +
raw little-endian data) or, only when torch is importable, a PyTorch .pt/.pth state dict.

Contract (docs/method.md, "The reverse segmenter contract"):
  inputs  target          [B,1,128,128]
          support_images  [Bs,S,1,128,128]   Bs = B or 1 (one support set broadcast to all targets)
          support_labels  [Bs,S,1,128,128]
  output  logits          [B,1,128,128]
  all float32, or all float16 with --dtype float16. B, Bs and S are dynamic.

Architecture (UniverSeg v1, 1,182,785 parameters): encoder of 4 CrossBlocks (64 features) with
2x2 max-pool between levels, decoder of 3 CrossBlocks after bilinear x2 upsampling
(align_corners=True) and concat [upsampled, skip]; 1x1 output conv to 1 channel.
CrossBlock: pair = conv3x3(concat[target, support]) (no activation) for each support;
target' = LeakyReLU(conv3x3(mean_s pair)); support'_s = LeakyReLU(conv3x3(pair_s)).
The first block's support features are concat[image, label].

--form naive       the cross conv runs on every (target, support) pair of concatenated features.
--form decomposed  the cross-conv kernel is split along its input channels into a target part and
                   a support part: conv_t(target) once per target, conv_s(support) once per
                   support, broadcast add (+ bias once). Same function, fewer FLOPs; in the last
                   block the pairs are never materialised (mean_s pair = conv_t(t) + mean_s conv_s(s)).
In both forms the last decoder block's support branch is dropped: nothing reads it.
--layout nhwc      (either form) features flow channels-last inside the graph, each Conv/MaxPool/
                   Resize wrapped in Transposes that ONNX Runtime's CUDA EP cancels when prefer_nhwc is
                   on (SPE_CUDA_PREFER_NHWC=1); the contract's inputs and output stay NCHW.
"""
from __future__ import annotations

import argparse
import json
import struct
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

N_FEAT = 64
N_ENC = 4
N_DEC = 3
SIZE = 128
LEAK = 0.01
OPSET = 17
IR_VERSION = 8
EXPECTED_PARAMS = 1_182_785


class WeightsError(ValueError):
    """Bad weights file: unreadable, missing/extra keys, wrong shapes."""


# --------------------------------------------------------------------------------------
# State dict layout
# --------------------------------------------------------------------------------------
def block_in_channels() -> list[tuple[str, int, int]]:
    """(prefix, target channels, support channels) of every CrossBlock, in forward order."""
    out = [("enc_blocks.0", 1, 2)]
    out += [(f"enc_blocks.{i}", N_FEAT, N_FEAT) for i in range(1, N_ENC)]
    out += [(f"dec_blocks.{i}", 2 * N_FEAT, 2 * N_FEAT) for i in range(N_DEC)]  # upsampled + skip
    return out


def expected_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for prefix, ct, cs in block_in_channels():
        shapes[f"{prefix}.cross.cross_conv.weight"] = (N_FEAT, ct + cs, 3, 3)
        shapes[f"{prefix}.cross.cross_conv.bias"] = (N_FEAT,)
        for branch in ("target", "support"):
            shapes[f"{prefix}.{branch}.vmapped.conv.weight"] = (N_FEAT, N_FEAT, 3, 3)
            shapes[f"{prefix}.{branch}.vmapped.conv.bias"] = (N_FEAT,)
    shapes["out_conv.conv.weight"] = (1, N_FEAT, 1, 1)
    shapes["out_conv.conv.bias"] = (1,)
    return shapes


def param_count(sd: dict[str, np.ndarray]) -> int:
    return int(sum(int(np.prod(v.shape)) for v in sd.values()))


def validate_state_dict(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Exact key set and shapes; returns float32 copies. Raises WeightsError naming the culprits."""
    exp = expected_shapes()
    missing = sorted(set(exp) - set(sd))
    extra = sorted(set(sd) - set(exp))
    msgs = []
    if missing:
        msgs.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
    if extra:
        msgs.append(f"unexpected keys ({len(extra)}): {', '.join(extra)}")
    if msgs:
        raise WeightsError("weights do not match UniverSeg v1: " + "; ".join(msgs))
    out = {}
    for k, shape in exp.items():
        v = np.asarray(sd[k])
        if tuple(v.shape) != shape:
            raise WeightsError(f"shape mismatch for {k}: expected {list(shape)}, got {list(v.shape)}")
        if not np.issubdtype(v.dtype, np.floating) and v.dtype.kind != "V":
            raise WeightsError(f"{k}: expected a floating-point tensor, got {v.dtype}")
        v = v.astype(np.float32)
        if not np.all(np.isfinite(v)):
            raise WeightsError(f"{k}: contains NaN or Inf")
        out[k] = v
    n = param_count(out)
    if n != EXPECTED_PARAMS:  # cannot happen when the shapes match; kept as a guard
        raise WeightsError(f"parameter count {n} != {EXPECTED_PARAMS}")
    return out


def random_state_dict(seed: int) -> dict[str, np.ndarray]:
    """Kaiming-normal weights (LeakyReLU gain) and small non-zero biases, official key names."""
    rng = np.random.default_rng(seed)
    gain = np.sqrt(2.0 / (1 + LEAK ** 2))
    sd = {}
    for k, shape in expected_shapes().items():
        if k.endswith(".weight"):
            fan_in = int(np.prod(shape[1:]))
            sd[k] = (rng.standard_normal(shape) * gain / np.sqrt(fan_in)).astype(np.float32)
        else:
            sd[k] = (rng.standard_normal(shape) * 0.05).astype(np.float32)
    return sd


# --------------------------------------------------------------------------------------
# Weight files
# --------------------------------------------------------------------------------------
_ST_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}


def load_safetensors(path: Path) -> dict[str, np.ndarray]:
    data = Path(path).read_bytes()
    if len(data) < 8:
        raise WeightsError(f"{path}: too short for a safetensors file")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8 or n > 100 * 1024 * 1024:
        raise WeightsError(f"{path}: bad safetensors header length {n}")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeightsError(f"{path}: unreadable safetensors header: {e}") from e
    if not isinstance(header, dict):
        raise WeightsError(f"{path}: safetensors header is not a JSON object")
    buf = memoryview(data)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], [int(s) for s in info["shape"]], info["data_offsets"]
        except (KeyError, TypeError, ValueError) as e:
            raise WeightsError(f"{path}: bad header entry for {name}") from e
        if not (0 <= begin <= end <= len(buf)):
            raise WeightsError(f"{path}: {name}: data offsets [{begin}, {end}) outside the data ({len(buf)} bytes)")
        count = int(np.prod(shape)) if shape else 1
        if dtype == "BF16":
            if end - begin != 2 * count:
                raise WeightsError(f"{path}: {name}: {end - begin} bytes for {count} BF16 values")
            u16 = np.frombuffer(buf[begin:end], dtype="<u2").astype(np.uint32)
            arr = (u16 << 16).view(np.float32).reshape(shape)
        elif dtype in _ST_DTYPES:
            dt = _ST_DTYPES[dtype]
            if end - begin != dt.itemsize * count:
                raise WeightsError(f"{path}: {name}: {end - begin} bytes for {count} {dtype} values")
            arr = np.frombuffer(buf[begin:end], dtype=dt).reshape(shape).copy()
        else:
            raise WeightsError(f"{path}: {name}: unsupported safetensors dtype {dtype}")
        out[name] = arr
    return out


def save_safetensors(sd: dict[str, np.ndarray], path: Path, metadata: dict | None = None):
    """Minimal writer (used by the tests and handy for converting a .pt once where torch exists)."""
    rev = {v: k for k, v in _ST_DTYPES.items()}
    header, chunks, off = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name in sorted(sd):
        a = np.ascontiguousarray(sd[name])
        a = a.astype(a.dtype.newbyteorder("<"))
        raw = a.tobytes()
        header[name] = {"dtype": rev[a.dtype], "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        chunks.append(raw)
        off += len(raw)
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(hb)) + hb + b"".join(chunks))


def load_torch(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch  # noqa: WPS433
    except ImportError as e:
        raise WeightsError(f"{path}: reading a PyTorch checkpoint needs torch, which is not importable here; "
                           "convert it to .safetensors or .npz where torch exists") from e
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except TypeError:  # torch < 1.13 has no weights_only
        obj = torch.load(str(path), map_location="cpu")
    except Exception as e:  # noqa: BLE001
        raise WeightsError(f"{path}: torch.load failed: {e}") from e
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: not a state dict (got {type(obj).__name__})")
    return {k: v.detach().cpu().float().numpy() for k, v in obj.items() if hasattr(v, "detach")}


def load_weights(path: Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except Exception as e:  # noqa: BLE001
            raise WeightsError(f"{path}: unreadable .npz: {e}") from e
    if suffix == ".safetensors":
        return load_safetensors(path)
    if suffix in (".pt", ".pth", ".bin", ".ckpt"):
        return load_torch(path)
    raise WeightsError(f"{path}: unknown weights format {suffix!r} (use .npz, .safetensors, .pt or .pth)")


# --------------------------------------------------------------------------------------
# Graph builder
# --------------------------------------------------------------------------------------
class Graph:
    def __init__(self, np_dtype):
        self.np_dtype = np.dtype(np_dtype)
        self.nodes: list = []
        self.inits: list = []
        self._n = 0
        self._consts: dict = {}

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def node(self, op: str, inputs: list, hint: str | None = None, **attrs) -> str:
        out = self.name(hint or op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def init(self, name: str, arr: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def i64(self, values) -> str:
        key = ("i64", tuple(values))
        if key not in self._consts:
            self._consts[key] = self.init(f"const_i64_{len(self._consts)}", np.array(values, np.int64))
        return self._consts[key]

    def f32(self, values) -> str:
        key = ("f32", tuple(values))
        if key not in self._consts:
            self._consts[key] = self.init(f"const_f32_{len(self._consts)}", np.array(values, np.float32))
        return self._consts[key]

    def weight(self, name: str, arr: np.ndarray) -> str:
        return self.init(name, arr.astype(self.np_dtype))

    def leaky(self, x: str) -> str:
        return self.node("LeakyRelu", [x], alpha=LEAK)


class Layout:
    """Where the channel axis lives in the graph's internal tensors.

    nchw: every op in ONNX's native layout.
    nhwc: features flow channels-last ([N,H,W,C]; pairs [B,S,H,W,C]); each Conv, MaxPool and Resize is
    wrapped in a Transpose pair. On ONNX Runtime's CUDA EP with prefer_nhwc those wrappers cancel against
    the transposes its layout transformer puts around NHWC kernels, so convolutions run channels-last
    with no data reordering, while the Reshape/ReduceMean/Add between them need no layout change either.
    Elsewhere (CPU, prefer_nhwc off) the transposes really run: same function, just slower.
    """

    def __init__(self, g: "Graph", name: str):
        if name not in ("nchw", "nhwc"):
            raise ValueError(f"unknown layout {name!r}")
        self.g, self.nhwc = g, name == "nhwc"

    def chan4(self) -> int:
        return 3 if self.nhwc else 1

    def chan5(self) -> int:
        return 4 if self.nhwc else 2

    def dims(self, c, h) -> list:
        return [h, h, c] if self.nhwc else [c, h, h]

    def enter(self, x: str) -> str:  # NCHW (graph input) -> internal
        return self.g.node("Transpose", [x], "to_nhwc", perm=[0, 2, 3, 1]) if self.nhwc else x

    def leave(self, x: str) -> str:  # internal -> NCHW (graph output, or an op that only takes NCHW)
        return self.g.node("Transpose", [x], "to_nchw", perm=[0, 3, 1, 2]) if self.nhwc else x

    def nchw_op(self, op: str, inputs: list, hint: str, **attrs) -> str:
        """An NCHW-only op applied to an internal 4-D tensor."""
        return self.enter(self.g.node(op, [self.leave(inputs[0])] + inputs[1:], hint, **attrs))


def build_graph(sd: dict[str, np.ndarray], form: str = "decomposed", dtype: str = "float32",
                size: int = SIZE, layout: str = "nchw") -> onnx.ModelProto:
    if form not in ("naive", "decomposed"):
        raise ValueError(f"unknown form {form!r}")
    if dtype not in ("float32", "float16"):
        raise ValueError(f"unknown dtype {dtype!r}")
    if size % (2 ** (N_ENC - 1)):
        raise ValueError(f"size {size} must be divisible by {2 ** (N_ENC - 1)}")
    sd = validate_state_dict(sd)
    np_dt = np.float16 if dtype == "float16" else np.float32
    elem = TensorProto.FLOAT16 if dtype == "float16" else TensorProto.FLOAT
    g = Graph(np_dt)
    lay = Layout(g, layout)

    # Dynamic sizes: B from the target, S from the supports.
    dim_b = g.node("Shape", ["target"], "dim_B", start=0, end=1)
    dim_s = g.node("Shape", ["support_images"], "dim_S", start=1, end=2)
    shape5_cache: dict = {}

    def to4(x: str, c: int, h: int) -> str:  # [*, S, ...] -> [* * S, ...]
        return g.node("Reshape", [x, g.i64([-1] + lay.dims(c, h))], "to4")

    def to5(x: str, c: int, h: int) -> str:  # [* * S, ...] -> [*, S, ...]
        key = (c, h)
        if key not in shape5_cache:
            shape5_cache[key] = g.node("Concat", [g.i64([-1]), dim_s, g.i64(lay.dims(c, h))], "shape5", axis=0)
        return g.node("Reshape", [x, shape5_cache[key]], "to5")

    def conv(x: str, w: str, b: str | None, k: int, hint: str) -> str:
        inputs = [w] + ([b] if b else [])
        return lay.nchw_op("Conv", [x] + inputs, hint, kernel_shape=[k, k], pads=[k // 2] * 4)

    def cross_block(prefix: str, t: str, s: str, ct: int, cs: int, h: int, first: bool, last: bool):
        """t [B,ct,h,h]; s [Bsup,S,cs,h,h] (Bsup = B, or 1/B in the first block) -> (t', s')."""
        wc = sd[f"{prefix}.cross.cross_conv.weight"]
        bc = sd[f"{prefix}.cross.cross_conv.bias"]
        if form == "naive":
            w = g.weight(f"{prefix}.cross.cross_conv.weight", wc)
            b = g.weight(f"{prefix}.cross.cross_conv.bias", bc)
            t5 = g.node("Unsqueeze", [t, g.i64([1])], "t5")  # [B,1,ct,h,h]
            s_rep = g.node("Concat", [g.i64([1]), dim_s, g.i64([1, 1, 1])], "rep_S", axis=0)
            t_exp = g.node("Expand", [t5, s_rep], "t_exp")  # [B,S,ct,h,h]
            if first:  # support batch may be 1: broadcast it to B
                b_rep = g.node("Concat", [dim_b, g.i64([1, 1, 1, 1])], "rep_B", axis=0)
                s = g.node("Expand", [s, b_rep], "s_exp")
            pair = g.node("Concat", [t_exp, s], "pair_in", axis=lay.chan5())  # target channels first
            y4 = conv(to4(pair, ct + cs, h), w, b, 3, "cross")  # [B*S,64,h,h]
            y5 = to5(y4, N_FEAT, h)
            mean = g.node("ReduceMean", [y5], "pair_mean", axes=[1], keepdims=0)  # [B,64,h,h]
        else:
            wt = g.weight(f"{prefix}.cross.cross_conv.weight.target_part", wc[:, :ct])
            ws = g.weight(f"{prefix}.cross.cross_conv.weight.support_part", wc[:, ct:])
            b = g.weight(f"{prefix}.cross.cross_conv.bias", bc)
            ta = conv(t, wt, b, 3, "cross_t")  # [B,64,h,h], bias added once here
            sa4 = conv(to4(s, cs, h), ws, None, 3, "cross_s")  # [Bsup*S,64,h,h]
            sa5 = to5(sa4, N_FEAT, h)
            s_mean = g.node("ReduceMean", [sa5], "s_mean", axes=[1], keepdims=0)  # [Bsup,64,h,h]
            mean = g.node("Add", [ta, s_mean], "pair_mean")  # [B,64,h,h]
            if not last:
                ta5 = g.node("Unsqueeze", [ta, g.i64([1])], "ta5")
                y5 = g.node("Add", [ta5, sa5], "pair")  # [B,S,64,h,h] (broadcasts Bsup = 1)
                y4 = g.node("Reshape", [y5, g.i64([-1] + lay.dims(N_FEAT, h))], "to4")
        wtc = g.weight(f"{prefix}.target.vmapped.conv.weight", sd[f"{prefix}.target.vmapped.conv.weight"])
        btc = g.weight(f"{prefix}.target.vmapped.conv.bias", sd[f"{prefix}.target.vmapped.conv.bias"])
        t_new = g.leaky(conv(mean, wtc, btc, 3, "target_conv"))
        if last:
            return t_new, None
        wsc = g.weight(f"{prefix}.support.vmapped.conv.weight", sd[f"{prefix}.support.vmapped.conv.weight"])
        bsc = g.weight(f"{prefix}.support.vmapped.conv.bias", sd[f"{prefix}.support.vmapped.conv.bias"])
        s_new = to5(g.leaky(conv(y4, wsc, bsc, 3, "support_conv")), N_FEAT, h)
        return t_new, s_new

    t = lay.enter("target")
    s = g.node("Concat", ["support_images", "support_labels"], "support_in", axis=2)  # image, label
    if lay.nhwc:  # [Bs,S,2,H,W] -> [Bs,S,H,W,2]
        s = g.node("Transpose", [s], "to_nhwc", perm=[0, 1, 3, 4, 2])
    blocks = block_in_channels()
    h = size
    skips = []
    for i in range(N_ENC):
        prefix, ct, cs = blocks[i]
        t, s = cross_block(prefix, t, s, ct, cs, h, first=(i == 0), last=False)
        if i < N_ENC - 1:
            skips.append((t, s, h))
            t = lay.nchw_op("MaxPool", [t], "pool_t", kernel_shape=[2, 2], strides=[2, 2])
            s = to5(lay.nchw_op("MaxPool", [to4(s, N_FEAT, h)], "pool_s", kernel_shape=[2, 2], strides=[2, 2]),
                    N_FEAT, h // 2)
            h //= 2
    scales = g.f32([1.0, 1.0, 2.0, 2.0])

    def up(x: str) -> str:
        return lay.nchw_op("Resize", [x, "", scales], "up", mode="linear",
                           coordinate_transformation_mode="align_corners")

    for i in range(N_DEC):
        prefix, ct, cs = blocks[N_ENC + i]
        t_skip, s_skip, h_skip = skips.pop()
        last = i == N_DEC - 1
        t = g.node("Concat", [up(t), t_skip], "t_cat", axis=lay.chan4())  # upsampled first, then skip
        s = g.node("Concat", [to5(up(to4(s, N_FEAT, h)), N_FEAT, h_skip), s_skip], "s_cat", axis=lay.chan5())
        h = h_skip
        t, s = cross_block(prefix, t, s, ct, cs, h, first=False, last=last)
    wo = g.weight("out_conv.conv.weight", sd["out_conv.conv.weight"])
    bo = g.weight("out_conv.conv.bias", sd["out_conv.conv.bias"])
    logits = lay.leave(conv(t, wo, bo, 1, "out_conv"))
    g.nodes.append(helper.make_node("Identity", [logits], ["logits"], name="logits"))

    graph = helper.make_graph(
        g.nodes,
        f"universeg_v1_{form}_{dtype}_{layout}",
        [
            helper.make_tensor_value_info("target", elem, ["B", 1, size, size]),
            helper.make_tensor_value_info("support_images", elem, ["Bs", "S", 1, size, size]),
            helper.make_tensor_value_info("support_labels", elem, ["Bs", "S", 1, size, size]),
        ],
        [helper.make_tensor_value_info("logits", elem, ["B", 1, size, size])],
        g.inits,
    )
    model = helper.make_model(graph, producer_name="spe-export_universeg",
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    model.doc_string = (f"UniverSeg v1 ({EXPECTED_PARAMS} parameters), form={form}, dtype={dtype}, "
                        f"layout={layout}. "
                        "Inputs target [B,1,H,W], support_images/support_labels [B or 1,S,1,H,W] in [0,1]; "
                        "output logits [B,1,H,W].")
    onnx.checker.check_model(model, full_check=True)
    return model


UNUSED_IN_GRAPH = (f"dec_blocks.{N_DEC - 1}.support.vmapped.conv.weight",
                   f"dec_blocks.{N_DEC - 1}.support.vmapped.conv.bias")


def graph_param_count(model: onnx.ModelProto) -> int:
    """Learned values stored in the graph (the helper constants 'const_*' are not counted)."""
    return int(sum(int(np.prod(i.dims)) for i in model.graph.initializer if not i.name.startswith("const_")))


def verify_with_numpy(model_bytes: bytes, sd: dict[str, np.ndarray], seed: int = 0, b: int = 1, s: int = 2):
    """Run the model with onnxruntime (CPU) on a small random case; relative error vs universeg_numpy."""
    import onnxruntime as ort

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import universeg_numpy  # noqa: WPS433

    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    in_dtype = np.float16 if sess.get_inputs()[0].type == "tensor(float16)" else np.float32
    size = sess.get_inputs()[0].shape[-1]
    rng = np.random.default_rng(seed)
    t = rng.random((b, 1, size, size)).astype(in_dtype)
    si = rng.random((1, s, 1, size, size)).astype(in_dtype)
    sl = (rng.random((1, s, 1, size, size)) > 0.5).astype(in_dtype)
    (out,) = sess.run(["logits"], {"target": t, "support_images": si, "support_labels": sl})
    ref = universeg_numpy.forward(sd, t, si, sl)
    return float(np.abs(out.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-12))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", type=Path, help="state dict: .npz, .safetensors, or .pt/.pth (needs torch)")
    src.add_argument("--random-weights", type=int, metavar="SEED", help="random weights (tests only)")
    ap.add_argument("--form", choices=["naive", "decomposed"], default="decomposed")
    ap.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    ap.add_argument("--layout", choices=["nchw", "nhwc"], default="nchw",
                    help="internal feature layout (nhwc: for the CUDA EP with prefer_nhwc; see Layout)")
    ap.add_argument("--out", type=Path, required=True, help="output .onnx file")
    ap.add_argument("--verify", action="store_true",
                    help="after export, compare onnxruntime (CPU) with the numpy reference on B=1, S=2")
    args = ap.parse_args(argv)
    try:
        sd = load_weights(args.weights) if args.weights is not None else random_state_dict(args.random_weights)
        model = build_graph(sd, args.form, args.dtype, layout=args.layout)
    except WeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    data = model.SerializeToString()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    print(f"wrote {args.out} ({len(data) / 1e6:.2f} MB): form={args.form} dtype={args.dtype} layout={args.layout}, "
          f"state dict {param_count(validate_state_dict(sd))} parameters, "
          f"graph {graph_param_count(model)} (last decoder support branch unused)")
    if args.verify:
        rel = verify_with_numpy(data, validate_state_dict(sd))
        print(f"verify: max relative error vs numpy reference {rel:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
