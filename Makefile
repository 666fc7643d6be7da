# The two commands a new user needs: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test test-browser lint bench clean browser

# The browser tests drive Debian's Chromium (playwright's own browser download is not used).
CHROMIUM := /usr/bin/chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[service,dev]'
	touch $(STAMP)

# Another address: make serve HOST=0.0.0.0 PORT=8080
HOST ?= 127.0.0.1
PORT ?= 8000

serve: $(STAMP)
	$(BIN)/skyphot serve --host $(HOST) --port $(PORT)

browser:
	@test -x $(CHROMIUM) || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

# Only the web front end's tests; screenshots in test-artifacts/browser/.
test-browser: $(STAMP) browser
	$(BIN)/pytest -q tests/browser

test: $(STAMP) browser
	$(BIN)/ruff check .
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV)
