# The two commands of the README: `make demo` and `make test`. Each does all set-up itself.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.policycompile-installed

.PHONY: demo test test-torch lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first: with it in place, the package's torch>=2.9 installs nothing more.
	$(PY) -m pip install --quiet '$(TORCH_SPEC)'
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

tools/node_modules/.package-lock.json: tools/package.json tools/package-lock.json
	cd tools && npm ci --no-audit --no-fund --loglevel=error

demo: $(STAMP)
	$(VENV)/bin/policycompile validate policies/*.yaml
	$(VENV)/bin/policycompile tree policies/demo.yaml
	$(VENV)/bin/policycompile explain policies/demo.yaml policycompile.examples.tiny_transformer.DecoderBlock.forward
	$(VENV)/bin/policycompile run policies/demo.yaml -m policycompile.examples.demo
	@echo "--- the same under the strict profile, in audit mode: every violation in one run"
	$(VENV)/bin/policycompile run policies/demo.yaml --profile strict --audit \
		-m policycompile.examples.demo; status=$$?; \
		echo "audit exit status $$status (4: the policy's violations were found)"; \
		test $$status -eq 4

test: $(STAMP) tools/node_modules/.package-lock.json
	$(PY) -m pytest

# Another torch release, in a virtual environment of its own: `make test-torch V=2.9.0`, or
# `V=newest` for the newest release the installer accepts (no version written down). These are
# the default (CUDA) wheels, several GB; they run on the CPU. The tests are those of the torch
# boundary and of what stands on it (docs/torch.md, "Versions").
TORCH_TESTS := tests/apply/test_dynamo_private.py tests/apply/test_seed.py \
	tests/apply/test_audit.py tests/apply/test_section8.py tests/apply/test_section8_rules.py \
	tests/apply/test_report.py tests/apply/test_no_failure_hidden.py tests/apply/test_suggest.py \
	tests/apply/test_definition.py tests/test_merge.py tests/test_load.py tests/test_cli.py
TORCH_VENV = .venv-torch-$(V)

test-torch:
	@test -n "$(V)" || { echo "make test-torch V=<torch version, or newest>"; exit 2; }
	$(PYTHON) -m venv $(TORCH_VENV)
	$(TORCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(TORCH_VENV)/bin/python -m pip install --quiet '$(if $(filter newest,$(V)),torch,torch==$(V))'
	$(TORCH_VENV)/bin/python -m pip install --quiet -e '.[test]'
	$(TORCH_VENV)/bin/python -c "import torch; print('torch', torch.__version__)"
	$(TORCH_VENV)/bin/python -m pytest -p no:cacheprovider $(TORCH_TESTS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy --strict policycompile
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) .venv-torch-* tools/node_modules
