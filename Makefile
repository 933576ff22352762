# `make run` starts the service; `make test` runs every test. Both set up what they need on first use.
SHELL := /bin/bash
PY_VENV := .venv
PY := $(PY_VENV)/bin/python
ORT_VERSION := 1.32.0
ORT_LIB := .ort/libonnxruntime.so.$(ORT_VERSION)
export SPE_ORT_LIB ?= $(CURDIR)/$(ORT_LIB)

.PHONY: run test ort lint bench fixtures clean-db

run: ort
	cargo build --release --locked
	tools/pg.sh .pgdata 54329 -- target/release/spe serve

test: ort
	tools/pg.sh .pgdata-test 54330 -- cargo test --locked
	$(PY) -m unittest discover -s tools -p 'test_*.py'

lint:
	cargo fmt --check
	cargo clippy --locked --all-targets -- -D warnings

bench: ort
	cargo bench --locked --bench label_fusion

# ONNX Runtime from the PyPI wheel (installed into a project-local venv, used by tools/ too).
ort: $(ORT_LIB)

$(PY_VENV)/.installed: tools/requirements.txt
	python3 -m venv $(PY_VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r tools/requirements.txt
	touch $@

$(ORT_LIB): $(PY_VENV)/.installed
	mkdir -p .ort
	cp $(PY_VENV)/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.$(ORT_VERSION) $@

fixtures: $(PY_VENV)/.installed
	$(PY) tools/make_fixtures.py

clean-db:
	rm -rf .pgdata .pgdata-test
