# The two commands a newcomer needs are `make demo` and `make test`.
# Everything else here is what they are made of.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install system-deps testbed lint typecheck unit test demo arm64 arm64-check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages the tests use: prometheus (with promtool) for the scrape test,
# systemd (systemd-analyze) for the unit file checks, qemu-user-static and
# debootstrap for the Raspberry Pi 5 check.
SYSTEM_PACKAGES := prometheus systemd qemu-user-static debootstrap openssh-server openssh-client git util-linux chromium chromium-driver
system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else echo "missing Debian packages:$$missing (run: sudo apt-get install$$missing)"; exit 1; fi; \
	fi

# Builds etcd, kube-apiserver & co. from Go modules once; cached outside the repo.
testbed: install
	$(BIN)/python -m testbed build

lint: install
	$(BIN)/ruff check fleetd tests bench testbed
	$(BIN)/ruff format --check fleetd tests bench testbed

typecheck: install
	$(BIN)/mypy

unit: testbed
	$(BIN)/pytest tests/unit -q

# The whole suite: lint, types, unit and integration tests on the real test bed,
# then the Raspberry Pi 5 bundle checked under qemu-aarch64.
test: system-deps testbed lint typecheck
	$(BIN)/pytest -q
	arm64/check.sh

# Two local spokes named like the example inventory, checked by fleetd.
demo: testbed
	$(BIN)/python -m testbed demo

# The Raspberry Pi 5 bundle (arm64/README.md): build it; check it under qemu-aarch64.
arm64: install
	arm64/build.sh

arm64-check: install
	arm64/check.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
