# inthub: one Makefile for the whole go.work workspace. Every target works
# across all modules from the repository root.

GO ?= go
# VCS stamping fails in some checkouts (copied trees, foreign-owned .git) and
# nothing reads it; keep whatever else the caller put in GOFLAGS.
export GOFLAGS := $(strip $(filter-out -buildvcs%,$(GOFLAGS)) -buildvcs=false)

# The workspace's modules, asked from go itself so a module added to go.work
# is built, tested and linted without touching this file.
MODULES     := $(shell $(GO) list -m)
MODULE_DIRS := $(shell $(GO) list -m -f '{{.Dir}}')
PKGS        := $(addsuffix /...,$(MODULES))

STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
TEST_FLAGS  ?= -race -count=1 -timeout 15m
BENCH_FLAGS ?= -run '^$$' -bench . -benchmem
# Extra arguments for `make run`, e.g. make run ARGS='--sync-always'.
ARGS ?=

.PHONY: all build run test test-cluster bench bench-e2e bench-cluster lint fmt-check vet staticcheck tidy clean

all: build

# The plugin binaries `make build` produces (the main packages under
# services/plugins), and a SHA-256 tool (coreutils, else macOS's shasum).
PLUGINS = $(notdir $(shell $(GO) list -f '{{if eq .Name "main"}}{{.ImportPath}}{{end}}' inthub.dev/services/plugins/...))
SHA256SUM = $(shell command -v sha256sum 2>/dev/null || echo shasum -a 256)

# bin/plugins.sha256 allows exactly the plugins this build produced: make
# run loads them; a binary put in bin/plugins by other means is refused.
build:
	@mkdir -p bin bin/plugins
	$(GO) build -o bin/ inthub.dev/services/cmd/...
	$(GO) build -o bin/plugins/ inthub.dev/services/plugins/...
	cd bin/plugins && $(if $(PLUGINS),$(SHA256SUM) $(PLUGINS),true) > ../plugins.sha256

run: build
	./bin/inthub dev --plugin-dir bin/plugins --plugin-checksums bin/plugins.sha256 $(ARGS)

# make test ends with a brief fuzz of the webhook body parsers (the seed
# corpus runs in every plain go test; this searches for new inputs for a
# few seconds). FUZZ_TIME=0 skips it.
FUZZ_TIME ?= 10s
FUZZ_TARGETS := FuzzParseGitHubBody FuzzParseGitLabBody

test:
	$(GO) test $(TEST_FLAGS) $(PKGS)
	@if [ "$(FUZZ_TIME)" != "0" ]; then for f in $(FUZZ_TARGETS); do \
		$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZ_TIME) inthub.dev/services/enrichment/ingress || exit 1; \
	done; fi

# The fleet on a three-node NATS cluster with R3 streams under faults
# (services/e2e: TestClusterFaults, one replica of each service, and
# TestClusterReplicas, several, see docs/cluster.md), one after the
# other: several minutes, so not part of make test.
test-cluster:
	E2E_CLUSTER=1 $(GO) test $(TEST_FLAGS) -parallel 1 -run '^TestCluster' -v inthub.dev/services/e2e

bench:
	$(GO) test $(BENCH_FLAGS) $(PKGS)

# The fleet end to end (services/e2e, BenchmarkFleet): the services as
# processes on PostgreSQL, an embedded NATS and a fake GitHub; N annotation
# requests (a burst, then paced) and M integration changes; prints
# throughput and p50/p99 latency. Not part of make test or make bench.
# E.g. make bench-e2e BENCH_E2E_ARGS='-e2e.requests 5000 -e2e.github-latency 50ms'
BENCH_E2E_ARGS ?= -e2e.requests 2000 -e2e.changes 300 -e2e.rate 100
bench-e2e:
	INTHUB_BENCH_E2E=1 $(GO) test -run '^$$' -bench '^BenchmarkFleet$$' -benchtime 1x -count 1 -v \
		inthub.dev/services/e2e -args $(BENCH_E2E_ARGS) | grep -v '^        {'

# The fleet on one NATS server, then on a cluster of three with R3 streams,
# in one run (BenchmarkFleetCluster): annotation and outbox throughput on
# each, then the SCM leader's node killed under load on the cluster (time
# back to full throughput, duplicates). docs/benchmarks.md has the numbers.
BENCH_CLUSTER_ARGS ?= -e2e.requests 1000 -e2e.changes 300
bench-cluster:
	INTHUB_BENCH_E2E=1 $(GO) test -run '^$$' -bench '^BenchmarkFleetCluster$$' -benchtime 1x -count 1 -v -timeout 30m \
		inthub.dev/services/e2e -args $(BENCH_CLUSTER_ARGS) | grep -v '^        {'

lint: fmt-check vet staticcheck

fmt-check:
	@out="$$(gofmt -l $(MODULE_DIRS))"; \
	if [ -n "$$out" ]; then echo "gofmt -l: these files need gofmt -w:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

staticcheck:
	$(GO) run $(STATICCHECK) $(PKGS)

# go mod tidy works on one module at a time and ignores go.work.
tidy:
	@set -e; for d in $(MODULE_DIRS); do echo "go mod tidy in $$d"; (cd "$$d" && $(GO) mod tidy); done

# Keeps .inthub: it holds the dev streams; remove it by hand to start afresh.
clean:
	rm -rf bin
