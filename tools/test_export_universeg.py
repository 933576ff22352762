"""Tests of tools/export_universeg.py (plain unittest; ~20-30 s on 2 cores).

    .venv/bin/python -m unittest discover -s tools -p 'test_*.py'
"""
from __future__ import annotations

import contextlib
import io
import json
import struct
import sys
import tempfile
import unittest
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
import export_universeg as ex  # noqa: E402
import universeg_numpy as ref  # noqa: E402

B, S = 2, 3
SIZE = ex.SIZE


def rel_err(a, b) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def session(model) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def run(sess, t, si, sl):
    (out,) = sess.run(["logits"], {"target": t, "support_images": si, "support_labels": sl})
    return out


class ExportUniverSegTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sd = ex.random_state_dict(1234)
        rng = np.random.default_rng(5)
        cls.t = rng.random((B, 1, SIZE, SIZE), dtype=np.float32)
        cls.si1 = rng.random((1, S, 1, SIZE, SIZE), dtype=np.float32)  # one support set for all targets
        cls.sl1 = (rng.random((1, S, 1, SIZE, SIZE)) > 0.6).astype(np.float32)
        cls.si = rng.random((B, S, 1, SIZE, SIZE), dtype=np.float32)  # one support set per target
        cls.sl = (rng.random((B, S, 1, SIZE, SIZE)) > 0.6).astype(np.float32)
        cls.naive = session(ex.build_graph(cls.sd, "naive", "float32"))
        cls.decomposed = session(ex.build_graph(cls.sd, "decomposed", "float32"))
        cls.out_dec_bcast = run(cls.decomposed, cls.t, cls.si1, cls.sl1)

    # -- structure ---------------------------------------------------------------------
    def test_parameter_count(self):
        self.assertEqual(ex.param_count(self.sd), 1_182_785)
        self.assertEqual(ex.param_count(ex.validate_state_dict(self.sd)), ex.EXPECTED_PARAMS)
        self.assertEqual(len(self.sd), 44)
        unused = sum(self.sd[k].size for k in ex.UNUSED_IN_GRAPH)
        for form in ("naive", "decomposed"):
            self.assertEqual(ex.graph_param_count(ex.build_graph(self.sd, form)), 1_182_785 - unused)

    def test_official_key_names(self):
        keys = set(self.sd)
        for k in ("enc_blocks.0.cross.cross_conv.weight", "enc_blocks.0.target.vmapped.conv.weight",
                  "enc_blocks.3.support.vmapped.conv.bias", "dec_blocks.2.cross.cross_conv.bias",
                  "out_conv.conv.weight", "out_conv.conv.bias"):
            self.assertIn(k, keys)
        self.assertEqual(self.sd["enc_blocks.0.cross.cross_conv.weight"].shape, (64, 3, 3, 3))
        self.assertEqual(self.sd["enc_blocks.1.cross.cross_conv.weight"].shape, (64, 128, 3, 3))
        self.assertEqual(self.sd["dec_blocks.0.cross.cross_conv.weight"].shape, (64, 256, 3, 3))

    def test_contract_io(self):
        for sess in (self.naive, self.decomposed):
            ins = {i.name: i for i in sess.get_inputs()}
            self.assertEqual(list(ins), ["target", "support_images", "support_labels"])
            self.assertEqual(ins["target"].shape, ["B", 1, SIZE, SIZE])
            self.assertEqual(ins["support_images"].shape, ["Bs", "S", 1, SIZE, SIZE])
            self.assertEqual(ins["support_labels"].shape, ["Bs", "S", 1, SIZE, SIZE])
            self.assertTrue(all(i.type == "tensor(float)" for i in ins.values()))
            (out,) = sess.get_outputs()
            self.assertEqual((out.name, out.shape, out.type), ("logits", ["B", 1, SIZE, SIZE], "tensor(float)"))

    # -- numerics ------------------------------------------------------------------------
    def test_forms_agree_and_match_numpy_reference(self):
        out_naive = run(self.naive, self.t, self.si, self.sl)
        out_dec = run(self.decomposed, self.t, self.si, self.sl)
        self.assertEqual(out_naive.shape, (B, 1, SIZE, SIZE))
        self.assertEqual(out_dec.shape, (B, 1, SIZE, SIZE))
        self.assertLessEqual(rel_err(out_dec, out_naive), 1e-5)
        expected = ref.forward(self.sd, self.t, self.si, self.sl)  # float64, per-pair loops
        self.assertGreater(np.abs(expected).max(), 1e-3)  # not a degenerate all-zero case
        self.assertLessEqual(rel_err(out_naive, expected), 1e-5)
        self.assertLessEqual(rel_err(out_dec, expected), 1e-5)
        # different targets with different supports give different answers
        self.assertGreater(np.abs(out_dec[0] - out_dec[1]).max(), 1e-3)

    def test_support_batch_one_broadcasts(self):
        si_rep = np.repeat(self.si1, B, axis=0)
        sl_rep = np.repeat(self.sl1, B, axis=0)
        explicit = run(self.decomposed, self.t, si_rep, sl_rep)
        self.assertEqual(self.out_dec_bcast.shape, (B, 1, SIZE, SIZE))
        self.assertLessEqual(rel_err(self.out_dec_bcast, explicit), 1e-6)
        naive_b = run(self.naive, self.t, self.si1, self.sl1)
        self.assertLessEqual(rel_err(naive_b, self.out_dec_bcast), 1e-5)
        # each target row equals a single-target run
        single = run(self.decomposed, self.t[1:2], self.si1, self.sl1)
        self.assertLessEqual(rel_err(single[0], self.out_dec_bcast[1]), 1e-5)

    def test_dynamic_b_and_s(self):
        out = run(self.decomposed, self.t[:1], self.si1[:, :1], self.sl1[:, :1])  # B=1, S=1
        self.assertEqual(out.shape, (1, 1, SIZE, SIZE))
        self.assertTrue(np.all(np.isfinite(out)))

    def test_float16_export(self):
        for form in ("naive", "decomposed"):
            model = ex.build_graph(self.sd, form, "float16")
            sess = session(model)
            self.assertTrue(all(i.type == "tensor(float16)" for i in sess.get_inputs()))
            self.assertEqual(sess.get_outputs()[0].type, "tensor(float16)")
            out = run(sess, self.t.astype(np.float16), self.si1.astype(np.float16), self.sl1.astype(np.float16))
            self.assertEqual(out.dtype, np.float16)
            self.assertEqual(out.shape, (B, 1, SIZE, SIZE))
            self.assertTrue(np.all(np.isfinite(out)))
            self.assertLessEqual(rel_err(out, self.out_dec_bcast), 1e-2, form)

    def test_nhwc_layout_is_the_same_function(self):
        for form in ("naive", "decomposed"):
            model = ex.build_graph(self.sd, form, "float32", layout="nhwc")
            sess = session(model)
            ins = {i.name: i.shape for i in sess.get_inputs()}
            self.assertEqual(ins["target"], ["B", 1, SIZE, SIZE])  # the contract stays NCHW
            self.assertEqual(ins["support_images"], ["Bs", "S", 1, SIZE, SIZE])
            self.assertEqual(sess.get_outputs()[0].shape, ["B", 1, SIZE, SIZE])
            self.assertLessEqual(rel_err(run(sess, self.t, self.si1, self.sl1), self.out_dec_bcast), 1e-5, form)
            per_target = run(self.decomposed, self.t, self.si, self.sl)
            self.assertLessEqual(rel_err(run(sess, self.t, self.si, self.sl), per_target), 1e-5, form)
        half = session(ex.build_graph(self.sd, "decomposed", "float16", layout="nhwc"))
        out = run(half, self.t.astype(np.float16), self.si1.astype(np.float16), self.sl1.astype(np.float16))
        self.assertEqual(out.dtype, np.float16)
        self.assertLessEqual(rel_err(out, self.out_dec_bcast), 1e-2)

    def test_nhwc_layout_wraps_every_nchw_op_in_cancelling_transposes(self):
        """The precondition for ONNX Runtime to drop every transpose when it runs convs channels-last."""
        graph = ex.build_graph(self.sd, "decomposed", "float32", layout="nhwc").graph
        producer = {n.output[0]: n for n in graph.node}
        consumers: dict = {}
        for n in graph.node:
            for i in n.input:
                consumers.setdefault(i, []).append(n)

        def perm(n):
            return [list(a.ints) for a in n.attribute if a.name == "perm"][0]

        wrapped = [n for n in graph.node if n.op_type in ("Conv", "MaxPool", "Resize")]
        # 4 convs a block (cross target part, cross support part, target, support), 3 in the last, + out conv
        self.assertEqual(sum(n.op_type == "Conv" for n in wrapped), 4 * (ex.N_ENC + ex.N_DEC))
        for n in wrapped:
            before = producer[n.input[0]]
            self.assertEqual((before.op_type, perm(before)), ("Transpose", [0, 3, 1, 2]), n.name)
            after = consumers[n.output[0]]
            self.assertEqual(len(after), 1, n.name)
            self.assertEqual((after[0].op_type, perm(after[0])), ("Transpose", [0, 2, 3, 1]), n.name)
        nchw = ex.build_graph(self.sd, "decomposed", "float32").graph
        self.assertFalse(any(n.op_type == "Transpose" for n in nchw.node))

    # -- weights files and errors ----------------------------------------------------------
    def assert_weights_error(self, sd, *needles):
        with self.assertRaises(ex.WeightsError) as cm:
            ex.build_graph(sd, "decomposed")
        for n in needles:
            self.assertIn(n, str(cm.exception))

    def test_missing_key(self):
        sd = dict(self.sd)
        del sd["dec_blocks.1.support.vmapped.conv.bias"]
        self.assert_weights_error(sd, "missing", "dec_blocks.1.support.vmapped.conv.bias")

    def test_extra_key(self):
        sd = dict(self.sd)
        sd["enc_blocks.4.cross.cross_conv.weight"] = np.zeros((64, 128, 3, 3), np.float32)
        self.assert_weights_error(sd, "unexpected", "enc_blocks.4.cross.cross_conv.weight")

    def test_missing_and_extra_named_together(self):
        sd = {("module." + k): v for k, v in self.sd.items()}
        with self.assertRaises(ex.WeightsError) as cm:
            ex.validate_state_dict(sd)
        msg = str(cm.exception)
        self.assertIn("out_conv.conv.weight", msg)
        self.assertIn("module.out_conv.conv.weight", msg)

    def test_shape_mismatch(self):
        sd = dict(self.sd)
        sd["enc_blocks.2.target.vmapped.conv.weight"] = np.zeros((64, 64, 1, 1), np.float32)
        self.assert_weights_error(sd, "enc_blocks.2.target.vmapped.conv.weight", "shape")

    def test_weight_files_roundtrip(self):
        with tempfile.TemporaryDirectory() as d:
            d = Path(d)
            np.savez(d / "w.npz", **self.sd)
            ex.save_safetensors(self.sd, d / "w.safetensors", {"source": "test"})
            for name in ("w.npz", "w.safetensors"):
                loaded = ex.load_weights(d / name)
                self.assertEqual(set(loaded), set(self.sd))
                for k, v in self.sd.items():
                    np.testing.assert_array_equal(loaded[k], v, err_msg=f"{name}:{k}")
            # float16 and bfloat16 safetensors are widened to float32
            half = {k: v.astype(np.float16) for k, v in self.sd.items()}
            ex.save_safetensors(half, d / "h.safetensors")
            lh = ex.validate_state_dict(ex.load_weights(d / "h.safetensors"))
            self.assertLess(np.abs(lh["out_conv.conv.weight"] - self.sd["out_conv.conv.weight"]).max(), 1e-3)
            self._write_bf16(d / "bf.safetensors", {"x": np.array([1.0, -2.5, 3.140625], np.float32)})
            np.testing.assert_array_equal(ex.load_weights(d / "bf.safetensors")["x"], [1.0, -2.5, 3.140625])
            # CLI: export from a file, errors exit 2 with the key named
            out = d / "u.onnx"
            with contextlib.redirect_stdout(io.StringIO()):
                self.assertEqual(ex.main(["--weights", str(d / "w.safetensors"), "--out", str(out)]), 0)
            self.assertGreater(out.stat().st_size, 4_000_000)
            bad = dict(self.sd)
            del bad["out_conv.conv.bias"]
            np.savez(d / "bad.npz", **bad)
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                rc = ex.main(["--weights", str(d / "bad.npz"), "--out", str(d / "bad.onnx")])
            self.assertEqual(rc, 2)
            self.assertIn("out_conv.conv.bias", err.getvalue())
            self.assertFalse((d / "bad.onnx").exists())

    @staticmethod
    def _write_bf16(path, tensors):
        header, chunks, off = {}, [], 0
        for k, v in tensors.items():
            raw = (v.astype(np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
            header[k] = {"dtype": "BF16", "shape": list(v.shape), "data_offsets": [off, off + len(raw)]}
            chunks.append(raw)
            off += len(raw)
        hb = json.dumps(header).encode()
        Path(path).write_bytes(struct.pack("<Q", len(hb)) + hb + b"".join(chunks))

    def test_bad_safetensors(self):
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "x.safetensors"
            p.write_bytes(struct.pack("<Q", 10 ** 9) + b"{}")
            with self.assertRaises(ex.WeightsError):
                ex.load_weights(p)
            hb = json.dumps({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
            p.write_bytes(struct.pack("<Q", len(hb)) + hb + b"\0" * 8)  # data too short
            with self.assertRaises(ex.WeightsError) as cm:
                ex.load_weights(p)
            self.assertIn("a", str(cm.exception))
            with self.assertRaises(ex.WeightsError):
                ex.load_weights(Path(d) / "missing.npz")
            (Path(d) / "w.txt").write_text("x")
            with self.assertRaises(ex.WeightsError):
                ex.load_weights(Path(d) / "w.txt")


if __name__ == "__main__":
    unittest.main()
