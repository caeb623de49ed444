# The one entry point: CI calls the same targets a developer types.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)

.PHONY: test lint typecheck demo bench clean debian-packages

# Debian packages the tests use as real services. Installed when missing and run as root;
# otherwise the tests that need them skip and say how to get them (under CI=true they fail).
# fonts-wqy-zenhei: Chinese glyphs for the browser tests' screenshots of the Chinese screens.
DEBIAN_PACKAGES := mosquitto postgresql chromium rabbitmq-server fonts-wqy-zenhei

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

debian-packages:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null \
	      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null; }; \
	  else \
	    echo "not root: tests needing$$missing will skip (sudo apt-get install$$missing)"; \
	  fi; \
	fi

test: $(STAMP) lint typecheck debian-packages
	$(PY) -m pytest -q

demo: $(STAMP)
	$(PY) -m hil_tests.rig.demo

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
