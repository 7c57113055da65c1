# redsource — development, test and CI entry points.
#
#   make test                 services + go test -race (REDSOURCE_REQUIRE_SERVICES=1)
#   make test PKG=./eventstore/... TESTFLAGS='-run TestAppend -v'
#   make bench [BENCHARGS='--rounds 1']   redsource bench with the Watermill peer (bin/)
#   make demo | bench-go | lint
#   eval "$(make -s services)"   export REDIS_URL / DATABASE_URL into your shell
#   make services-stop        stop what scripts/services.sh started
#
# The services recipe lines use `svc=$$(...)` before `eval`, because
# `eval "$$(cmd)"` would ignore a failing cmd.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

GO        ?= go
PKG       ?= ./...
TESTFLAGS ?=
BENCH     ?= .
BENCHFLAGS ?=
BENCHARGS ?=
# The Watermill peer of `redsource bench` is a module of its own, so that
# the core go.mod holds neither Watermill nor go-redis; ./... does not
# reach into it, so vet and test name it.
PEER      := bench/watermill
FUZZTIME  ?= 10s
SERVICES  := scripts/services.sh

# Run a command with REDIS_URL / DATABASE_URL from scripts/services.sh exported.
with_services = svc="$$($(SERVICES))"; eval "$$svc";

.PHONY: help services services-stop services-status test demo bench bench-go vet fmt-check lint fuzz

help:
	@sed -n '3,8s/^# \{0,1\}//p' Makefile

services:
	@$(SERVICES)

services-stop:
	@$(SERVICES) stop

services-status:
	@$(SERVICES) status

test:
	@$(with_services) \
	export REDSOURCE_REQUIRE_SERVICES=1; \
	echo "REDIS_URL=$$REDIS_URL DATABASE_URL=$$DATABASE_URL" >&2; \
	set -x; \
	$(GO) test -race -count=1 -timeout 20m $(TESTFLAGS) $(PKG); \
	if [ "$(PKG)" = ./... ]; then $(GO) test -C $(PEER) -race -count=1 $(TESTFLAGS) ./...; fi

demo:
	@$(with_services) \
	set -x; \
	$(GO) run ./examples/bank demo

# redsource bench (docs/cli.md, "bench"), with the Watermill peer built
# from $(PEER); the plot goes to bin/bench.svg.
bench:
	@$(with_services) \
	set -x; \
	$(GO) build -C $(PEER) -o $(CURDIR)/bin/watermill-bench . ; \
	$(GO) build -ldflags "-X main.buildCommit=$$(git rev-parse --short HEAD 2>/dev/null || true)" -o bin/redsource ./cmd/redsource; \
	bin/redsource bench --peer bin/watermill-bench --svg bin/bench.svg $(BENCHARGS)

# The go test benchmarks of the packages (docs/performance.md).
bench-go:
	@$(with_services) \
	set -x; \
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchmem -count 1 $(BENCHFLAGS) $(PKG)

vet:
	$(GO) vet $(PKG)
	$(GO) vet -C $(PEER) ./...

fmt-check:
	@files="$$(find . -name '*.go' -not -path './vendor/*' -not -path '*/testdata/*' -not -path './.git/*')"; \
	if [ -z "$$files" ]; then echo "fmt-check: no Go files"; exit 0; fi; \
	out="$$(gofmt -l $$files)"; \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi; \
	echo "fmt-check: ok"

lint: vet fmt-check

# Short runs of every FuzzXxx target (go test -fuzz takes one package and one target at a time).
fuzz:
	@found=0; \
	for f in $$(grep -rl --include='*_test.go' '^func Fuzz' . | grep -v '/vendor/' | sort); do \
		for t in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$$f"); do \
			found=1; \
			echo "== $$t in $$(dirname "$$f")"; \
			$(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) "./$$(dirname "$${f#./}")"; \
		done; \
	done; \
	[ "$$found" = 1 ] || echo "fuzz: no fuzz targets"
