# `make run` starts the service; `make test` runs every test. Both set up what they need on first use.
SHELL := /bin/bash
PY_VENV := .venv
PY := $(PY_VENV)/bin/python
ORT_VERSION := 1.32.0
ORT_LIB := .ort/libonnxruntime.so.$(ORT_VERSION)
export SPE_ORT_LIB ?= $(CURDIR)/$(ORT_LIB)
# A file-backed S3 server (crates.io s3s-fs) for the S3 blob-store test, built once into .tools/.
S3S_FS_VERSION := 0.14.1
S3S_FS := .tools/bin/s3s-fs

.PHONY: run test ort lint bench bench-accuracy bench-load fuzz api-fuzz fixtures clean-db

run: ort
	cargo build --release --locked
	tools/pg.sh .pgdata 54329 -- target/release/spe serve

test: ort $(S3S_FS)
	tools/chromium.sh
	PG_FSYNC=off tools/pg.sh .pgdata-test 54330 -- cargo test --workspace --locked
	$(PY) -m unittest discover -s tools -p 'test_*.py'

lint:
	cargo fmt --check
	cargo clippy --workspace --locked --all-targets -- -D warnings

bench: ort
	cargo bench --locked --bench label_fusion

# SPE estimate accuracy on ../shared (or SPE_SHARED): clean, small and shifted batches of held-out
# images, every checkpoint; `make bench-accuracy ARGS="--quick"` or ARGS="--dataset jsrt". JSON: target/accuracy.json.
bench-accuracy: ort
	cargo bench --locked --bench accuracy -- $(ARGS)

# Load on loopback (32 large uploads, 200 GET/s, 50 slow clients) against the release binary and a private
# PostgreSQL (.pgdata-load); `make bench-load ARGS="--seconds 60"`. JSON: target/load.json.
bench-load: ort
	PG_FSYNC=off tools/pg.sh .pgdata-load 54342 -- cargo bench --locked --bench load -- $(ARGS)

# `make fuzz TARGET=dicom SECONDS=300`: one cargo-fuzz target (image, dicom, nifti, multipart) for SECONDS
# seconds, from its seeds (tools/fuzz/corpus/, git-ignored, generated on first use; new inputs go there),
# the committed malformed corpus (tests/fixtures/corrupt/) and, for dicom and nifti, the committed clinical
# fixtures. MAXLEN=65536 lets inputs grow past libFuzzer's default (the largest seed, or 4 KB), e.g. to
# multi-frame instances and whole volumes. Findings: tools/fuzz/artifacts/.
SECONDS ?= 300
MAXLEN ?=
FUZZ_SEEDS_dicom = tests/fixtures/dicom/batch
FUZZ_SEEDS_nifti = tests/fixtures/nifti
fuzz:
	@test -n "$(TARGET)" || { echo "usage: make fuzz TARGET=image|dicom|nifti|multipart [SECONDS=300] [MAXLEN=N]"; exit 2; }
	command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	ls tools/fuzz/corpus/$(TARGET)/seed-* >/dev/null 2>&1 || cargo test --locked --test corrupt_corpus -- --ignored
	RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir tools/fuzz -O $(TARGET) tools/fuzz/corpus/$(TARGET) \
		tests/fixtures/corrupt/$(TARGET) $(FUZZ_SEEDS_$(TARGET)) -- -max_total_time=$(SECONDS) \
		-rss_limit_mb=2048 -timeout=10 -print_final_stats=1 $(if $(MAXLEN),-max_len=$(MAXLEN))

# `make api-fuzz SECONDS=300`: schemathesis (default checks) against a test server holding a calibrated model,
# its calibration and an estimate, for SECONDS seconds (tests/service/api_clients.rs; `make test` runs 60 s).
api-fuzz: ort
	PG_FSYNC=off SPE_API_FUZZ_SECONDS=$(SECONDS) tools/pg.sh .pgdata-test 54330 -- \
		cargo test --locked --test service schemathesis -- --nocapture

# ONNX Runtime from the PyPI wheel (installed into a project-local venv, used by tools/ too).
ort: $(ORT_LIB)

$(PY_VENV)/.installed: tools/requirements.txt
	python3 -m venv $(PY_VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r tools/requirements.txt
	touch $@

$(ORT_LIB): $(PY_VENV)/.installed
	mkdir -p .ort
	cp $(PY_VENV)/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.$(ORT_VERSION) $@

$(S3S_FS):
	cargo install --quiet --locked --root .tools --version $(S3S_FS_VERSION) --features binary s3s-fs

fixtures: $(PY_VENV)/.installed
	$(PY) tools/make_fixtures.py

clean-db:
	rm -rf .pgdata .pgdata-test
