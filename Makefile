# make setup   one-time set-up (idempotent): .venv with ROS 2 Kilted wheels + torch, messages, env.sh
# make demo    the main job: synthetic lab bag -> train -> evaluate -> node over ROS 2 topics
# make test    lint + type check + the test suite (what CI runs)
SHELL := /bin/bash
.PHONY: setup demo test lint

setup:
	@bash scripts/setup.sh

demo: setup
	@source ./env.sh && vit-perception demo

lint: setup
	@source ./env.sh && ruff check . && \
	  if [ -f mypy.ini ]; then mypy --config-file mypy.ini; fi

test: lint
	@source ./env.sh && VIT_PERCEPTION_REQUIRE_ROS=1 python -m pytest -p no:cacheprovider
