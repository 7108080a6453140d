# privstage: two commands on a fresh machine: `make demo` and `make test`.
# Every target bootstraps .venv from constraints.txt when it is missing or stale.
SHELL := /bin/bash
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.privstage-installed
export PYSPARK_PYTHON := $(abspath $(BIN)/python)
export PYSPARK_DRIVER_PYTHON := $(abspath $(BIN)/python)
export SPARK_LOCAL_IP ?= 127.0.0.1

JAR := src/privstage/jvm/privstage-spark.jar
JAVA_SRC := $(shell find jvm/src -name '*.java')

.PHONY: demo test test-fast bench lint clean venv jvm

venv: $(STAMP)

jvm: $(JAR)

# privstage's JVM functions, compiled against the Spark jars that pyspark ships.
$(JAR): $(STAMP) $(JAVA_SRC)
	@command -v javac >/dev/null || { echo "privstage needs a JDK 17 (javac) on PATH" >&2; exit 1; }
	rm -rf build/jvm && mkdir -p build/jvm
	javac --release 17 -nowarn -cp "$$($(BIN)/python -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "jars"))')/*" -d build/jvm $(JAVA_SRC)
	jar cf $(JAR) -C build/jvm .

$(STAMP): constraints.txt pyproject.toml
	@test -n "$(PYTHON)" || { echo "privstage needs Python 3.11 or newer on PATH" >&2; exit 1; }
	@command -v java >/dev/null || { echo "privstage needs a JDK 17 (java) on PATH" >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[all,dev]'
	@touch $(STAMP)

demo: $(STAMP) $(JAR)
	$(BIN)/privstage demo

test: $(STAMP) $(JAR)
	$(BIN)/python -m pytest

test-fast: $(STAMP) $(JAR)
	$(BIN)/python -m pytest -m "not slow"

bench: $(STAMP) $(JAR)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check src operators assets tests integration_tests bench pipelines

clean:
	rm -rf $(VENV) build dist .pytest_cache .privstage demo-output $(JAR)
