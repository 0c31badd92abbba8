# Thin wrappers around scripts/: the scripts are the source of truth (CI runs scripts/test).
# Pass extra arguments with ARGS, e.g. `make test ARGS="tests/unit -x"`.
.DEFAULT_GOAL := help
.PHONY: help bootstrap gen lint test dev
ARGS ?=

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z-]*:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

bootstrap: ## install uv if missing and sync .venv with uv.lock
	@bash scripts/bootstrap

gen: ## regenerate gen/ from proto/
	@bash scripts/bootstrap
	@.venv/bin/python scripts/gen

lint: ## every check of `make test` but pytest: gen drift, ruff, mypy, import contracts
	@bash scripts/test --lint-only

test: ## the full test command, as CI runs it (ARGS go to pytest)
	@bash scripts/test $(ARGS)

dev: ## run jobwire locally with an embedded Postgres (ARGS go to `jobwire dev`)
	@bash scripts/dev $(ARGS)
