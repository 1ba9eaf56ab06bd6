# The two commands of the README: `make demo` and `make test`. Each does all set-up itself.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.policycompile-installed

.PHONY: demo test lint bench clean

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

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy --strict policycompile
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) tools/node_modules
