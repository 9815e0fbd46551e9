# The README's commands. Everything runtime lives under $(PIPELINE_HOME).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SEED ?= 7
EVENTS ?= 1000000
STUDIES ?= 3000
SEEDS ?= 10
SIZE ?= lab
export PIPELINE_HOME ?= $(CURDIR)/.runtime
export DAGSTER_HOME ?= $(PIPELINE_HOME)/dagster
# The operator's trust store and key live outside the pipeline's home: the pipeline cannot rewrite them.
export PIPELINE_TRUST_STORE ?= $(CURDIR)/.trust
export PIPELINE_OPERATOR_KEY ?= $(CURDIR)/.operator/operator.key
# Each approval power's key is held by its own reviewer, never in the pipeline's key folder (demo keys).
export PIPELINE_CODE_APPROVER_KEY ?= $(CURDIR)/.reviewers/code-approval.key
export PIPELINE_RETRAINING_APPROVER_KEY ?= $(CURDIR)/.reviewers/retraining-approval.key
export GX_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.DEFAULT_GOAL := help
.PHONY: help install data approve-code approve-retraining trust-approvers trust-release-key certs alarms acknowledge-alarm rotate-keys kafka-data demo test scorecard attack serve serve-healthcare bench ui screenshots stack stack-down stack-status demo-stack clean

help:  ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-20s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required: set PYTHON=/path/to/python3.11")'
	@java -version 2>&1 | grep -q 'version "\(1[7-9]\|2[0-9]\)' || { echo "Java 17+ is required for Spark: install openjdk-17-jre-headless"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -c constraints.txt -e '.[dev,prod]'
	@touch $@

install: $(VENV)/.installed  ## create .venv and install the project with its dev tools

data: install  ## generate the example sources' signed batches and enrol the sources
	$(PY) -m examples.ecommerce.generate --seed $(SEED) --events $(EVENTS)
	$(PY) -m examples.healthcare.generate --seed $(SEED) --studies $(STUDIES)

approve-code: install  ## a reviewer signs the current transformation code with their own key
	$(PY) -m pipelines.approve_code

approve-retraining: install  ## a reviewer signs the current healthcare training set with their own key
	$(PY) -m pipelines.approve_retraining

trust-approvers: install  ## the operator lists the demo reviewers' public keys (one per power) as approvers
	$(PY) -m pipelines.operator trust-approver code "$$($(PY) -m pipelines.approve_code --public-key)"
	$(PY) -m pipelines.operator trust-approver retraining "$$($(PY) -m pipelines.approve_retraining --public-key)"

trust-release-key: install  ## the operator lists the release key as trusted (promotion never does)
	$(PY) -m pipelines.operator trust-release-key

certs: install  ## a local CA with server and client certificates for TLS (under $PIPELINE_HOME/certs)
	$(PY) -m resources.certificates $(PIPELINE_HOME)/certs --client demo

alarms: install  ## the open alarms (failed audits, refused releases) in the operator's trust store
	$(PY) -m pipelines.operator alarms

acknowledge-alarm: install  ## the operator clears one: make acknowledge-alarm ALARM=<id> NOTE="what was done"
	$(PY) -m pipelines.operator acknowledge "$(ALARM)" --note "$(NOTE)"

rotate-keys: install  ## new primary data key and ledger MAC key; older artifacts and entries still decrypt and verify
	$(PY) -m pipelines.rotate_keys

kafka-data: install  ## publish the inbox window of `make data` to Kafka: make kafka-data KAFKA=host:port
	$(PY) -m examples.ecommerce.kafka --bootstrap $(KAFKA) --seed $(SEED) --events $(EVENTS)

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	@mkdir -p $(DAGSTER_HOME)
	@cp dagster.yaml $@

demo: install data trust-approvers approve-code trust-release-key $(DAGSTER_HOME)/dagster.yaml  ## run the lifecycle end to end and print the summary
	EVENTS=$(EVENTS) STUDIES=$(STUDIES) SEED=$(SEED) $(PY) -m examples.demo

test: install $(DAGSTER_HOME)/dagster.yaml  ## the whole test suite
	$(PY) -m pytest

scorecard: install $(DAGSTER_HOME)/dagster.yaml  ## every attack on fresh pipelines + clean runs (SEEDS=10, SIZE=lab|large); writes reports/scorecard.json
	$(PY) -m examples.attacks scorecard --seeds $(SEEDS) --size $(SIZE)

attack: install $(DAGSTER_HOME)/dagster.yaml  ## one attack: make attack SCENARIO=healthcare/backdoor (no SCENARIO: the list)
	@if [ -z "$(SCENARIO)" ]; then $(PY) -m examples.attacks list; else $(PY) -m examples.attacks attack $(SCENARIO); fi

serve: install  ## the recommender server (current champion) on http://127.0.0.1:8000; prints how to call it
	$(PY) -m serving.ecommerce

serve-healthcare: install  ## the lesion diagnostic server (current champion) on http://127.0.0.1:8001; prints how to call it
	$(PY) -m serving.healthcare

bench: install  ## performance suite: ratios against baselines of the same run; writes reports/bench.json
	$(PY) -m benchmarks.integrity
	$(PY) -m benchmarks.store
	$(PY) -m benchmarks.serving
	$(PY) -m benchmarks.scale
	$(PY) -m benchmarks.controls

stack: install  ## start the production stack on loopback (Postgres over TLS, S3/KMS, MLflow, Spark, Dagster daemon, UI behind a TLS proxy with passwords)
	$(PY) -m deploy.stack up

stack-down: install  ## stop exactly the stack's processes and forget its state (its S3/KMS endpoint is in memory)
	$(PY) -m deploy.stack down

stack-status: install  ## which stack processes run
	$(PY) -m deploy.stack status

demo-stack: export PIPELINE_HEALTHCARE_SETTINGS ?= $(CURDIR)/examples/healthcare/small-world.json
demo-stack: stack  ## both lifecycles (small worlds) submitted to the stack; retraining started by its daemon
	$(PY) -m examples.stack_demo --seed $(SEED)

ui: install $(DAGSTER_HOME)/dagster.yaml  ## the Dagster UI on http://127.0.0.1:3000
	$(VENV)/bin/dagster dev -w workspace.yaml

screenshots: install  ## refresh docs/img/ from the browser tests (on a throwaway stack; Chromium at /usr/bin/chromium)
	SCREENSHOTS=1 $(PY) -m pytest tests/stack/test_ui_on_the_stack.py

clean:  ## forget all runtime state (store, ledger, keys, landing zone, Dagster runs), the trust store and every held key
	rm -rf $(PIPELINE_HOME) $(PIPELINE_TRUST_STORE) $(dir $(PIPELINE_OPERATOR_KEY)) reports
	rm -f $(PIPELINE_CODE_APPROVER_KEY) $(PIPELINE_RETRAINING_APPROVER_KEY)
