# Each target installs what it needs into .venv, then runs.
# torch goes in first: on a machine without CUDA, `pip install torch==2.13.0` takes the
# CPU build (a plain `torch` requirement would pull several GB of CUDA packages). pip installs without
# byte-compiling (it compiles on one core); compileall then compiles on every core, so that the tests'
# processes (two pytest workers, Ray workers, command-line subprocesses) do not each compile the same
# modules on first import. A file that does not compile (Python 2 examples inside some packages) is never
# imported, so compileall's failure is ignored.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-compile "$(TORCH)"
	$(BIN)/python -m pip install --quiet --no-compile -e ".[all,test]"
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib > /dev/null || true
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15 tests

bench: $(STAMP)
	$(BIN)/python bench/calculator.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
