.PHONY: help install train test test-fast lint format bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

install:  ## install bigtrain for development (CPU torch)
	pip install torch==2.13.0 -e ".[dev]"

train:  ## train the default (MLP on digits)
	bigtrain

test:  ## the whole CPU suite, as CI runs it
	ruff check src tests scripts && pytest -m "not gpu" -n 2 --dist loadfile

test-fast:  ## the fast suite (plain pytest)
	pytest

lint:  ## ruff lint and format check
	ruff check src tests scripts && ruff format --check src tests scripts

format:  ## apply ruff's formatting and safe fixes
	ruff check --fix src tests scripts && ruff format src tests scripts

clean:  ## remove build artefacts (run directories in outputs/ are kept)
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache
