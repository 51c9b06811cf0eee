# Each target installs what it needs into .venv, then runs.
# torch goes in first: on a machine without CUDA, `pip install torch==2.13.0` takes the
# CPU build (a plain `torch` requirement would pull several GB of CUDA packages). pip installs without
# byte-compiling: of the 25 000 modules installed, the tests import about 3 000, and compiling them all
# (compileall, 30 s on 2 cores) cost more than compiling those as they are first imported. The tests and the
# demo run with bytecode writing on (PYTHONDONTWRITEBYTECODE unset for them), so that the first process to
# import a module writes its .pyc into .venv and the others (two pytest workers, Ray workers, command-line
# subprocesses) read it.
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
	touch $(STAMP)

demo: $(STAMP)
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/python examples/demo.py

test: $(STAMP)
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15 tests

bench: $(STAMP)
	$(BIN)/python bench/calculator.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
