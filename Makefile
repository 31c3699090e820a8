# Two commands do everything on a fresh machine: `make demo` and `make test`.
# The virtual environment is rebuilt whenever pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test broker browser softhsm contract-tools clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Tests and the demo start their own Mosquitto on a free port; the Debian package provides the program.
broker:
	@command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto || { \
		echo "installing mosquitto (Debian package)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; }

# The bench page's browser tests drive Debian's headless Chromium through Debian's chromedriver (Selenium); nothing
# is downloaded by Selenium or a browser installer.
browser:
	@{ command -v chromium >/dev/null && test -x /usr/bin/chromedriver; } || { \
		echo "installing chromium and chromium-driver (Debian packages)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

# Keys in a PKCS#11 token (docs/keys.md): the tests make their own SoftHSM2 tokens in temporary folders (never the
# machine's), with Debian's softhsm2 as the token and its softhsm2-util to initialise them.
softhsm:
	@{ command -v softhsm2-util >/dev/null && test -f /usr/lib/softhsm/libsofthsm2.so; } || { \
		echo "installing softhsm2 (Debian package)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq softhsm2 >/dev/null; }

# The official AsyncAPI JSON Schemas that tests/station/test_contract.py validates docs/asyncapi.yaml against: npm
# package @asyncapi/specs at the version pinned in tools/asyncapi/package.json and package-lock.json.
CONTRACT_TOOLS := tools/asyncapi/node_modules/.installed
contract-tools: $(CONTRACT_TOOLS)
$(CONTRACT_TOOLS): tools/asyncapi/package.json tools/asyncapi/package-lock.json
	@command -v npm >/dev/null || { echo "npm is needed for the contract check (Debian: apt-get install npm)"; exit 1; }
	cd tools/asyncapi && npm ci --no-audit --no-fund --ignore-scripts
	touch $@

demo: $(STAMP) broker
	$(BIN)/reflash demo

test: $(STAMP) broker browser softhsm contract-tools
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest

clean:
	rm -rf $(VENV) work tools/asyncapi/node_modules .mypy_cache .ruff_cache .pytest_cache .hypothesis
