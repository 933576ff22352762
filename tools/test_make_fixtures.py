"""The committed fixtures under tests/fixtures/ are exactly what tools/make_fixtures.py generates.

PNGs are compared by decoded pixels and ONNX files as parsed protobuf messages, so a different
zlib/protobuf build that encodes the same content differently does not fail the test.
"""
from __future__ import annotations

import contextlib
import io
import sys
import tempfile
import unittest
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402

FIXTURES = mf.REPO_ROOT / "tests" / "fixtures"
GENERATED = ("synthetic", "corrupt", "universeg_tiny.onnx")


def generated_files(root: Path) -> list[str]:
    out = []
    for g in GENERATED:
        p = root / g
        if p.is_file():
            out.append(g)
        elif p.is_dir():
            # corrupt/ holds this script's top-level files; its subfolders come from the Rust corpus tests.
            files = p.glob("*") if g == "corrupt" else p.rglob("*")
            out += [str(f.relative_to(root)) for f in sorted(files) if f.is_file()]
    return sorted(out)


@unittest.skipUnless((FIXTURES / "synthetic").is_dir(), "fixtures not generated")
class FixturesUpToDateTest(unittest.TestCase):
    def test_regenerated_fixtures_match_committed(self):
        with tempfile.TemporaryDirectory() as d:
            d = Path(d)
            with contextlib.redirect_stdout(io.StringIO()):
                mf.main(["--out", str(d), "--skip-pseudo"])
            self.assertEqual(generated_files(d), generated_files(FIXTURES))
            for rel in generated_files(d):
                a, b = (d / rel).read_bytes(), (FIXTURES / rel).read_bytes()
                if a == b:
                    continue
                if rel.endswith(".png") and "corrupt" not in rel:
                    np.testing.assert_array_equal(mf.png_read_gray(a), mf.png_read_gray(b), err_msg=rel)
                elif rel.endswith(".onnx") and "garbage" not in rel:
                    self.assertEqual(onnx.load_from_string(a), onnx.load_from_string(b), rel)
                else:
                    self.fail(f"{rel} differs from a fresh run of tools/make_fixtures.py")

    def test_sizes(self):
        total = sum((FIXTURES / r).stat().st_size for r in generated_files(FIXTURES))
        self.assertLess(total, 3 * 1024 * 1024)
        for folder in ("checkpoints", "checkpoints_rgb_sigmoid"):
            for p in (FIXTURES / "synthetic" / folder).glob("*.onnx"):
                self.assertLess(p.stat().st_size, 50 * 1024, p)


if __name__ == "__main__":
    unittest.main()
