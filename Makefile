# jetjobs developer entry points. `make help` lists them.
GO        ?= go
BIN       := bin
PKGS      := ./...
TEST_FLAGS ?= -race -timeout 30m
BENCH     ?= .
BENCHTIME ?= 1x

.PHONY: help build test test-datajoint lint bench bench-go bench-e2e demo chaos soak clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-15s %s\n", $$1, $$2}'

build: ## build the programs (scheduler, worker, jobsctl, jetjobs-bench, jetjobs-chaos) into bin/
	$(GO) build -o $(BIN)/ ./cmd/...

test: ## run every test (unit and integration, against MariaDB/MySQL and NATS) with the race detector
	$(GO) vet $(PKGS)
	$(GO) test $(TEST_FLAGS) $(PKGS)

test-datajoint: ## the tests with the real DataJoint for Python (its Debian packages: .ci/datajoint-packages)
	$(GO) vet -tags datajoint ./e2e/
	$(GO) test $(TEST_FLAGS) -tags datajoint -run 'DataJoint' ./e2e/

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) vet -tags datajoint ./e2e/

bench: bench-go bench-e2e ## both kinds of benchmark below, one after the other

bench-go: ## the Go benchmarks, with their figures (BENCH=regexp, BENCHTIME=Nx or duration; the DataJoint ones need test-datajoint's packages)
	$(GO) test -tags datajoint -run '^$$' -bench '$(BENCH)' -benchtime $(BENCHTIME) -benchmem $(PKGS)

bench-e2e: build ## the end-to-end benchmark (cmd/jetjobs-bench): the plans on 10,000,000 jobs, then the real programs on 100,000 and 1,000,000 keys sustained, 20,000 pre-published, 2,000 with --exec (BENCH_FLAGS=), then event latency through 1 and 3 stages
	$(BIN)/jetjobs-bench --bin $(BIN) -q --explain-only --n 10000000
	$(BIN)/jetjobs-bench --bin $(BIN) -q --n 100000 $(BENCH_FLAGS)
	$(BIN)/jetjobs-bench --bin $(BIN) -q --n 1000000 $(BENCH_FLAGS)
	$(BIN)/jetjobs-bench --bin $(BIN) -q --n 20000 --prepublished $(BENCH_FLAGS)
	$(BIN)/jetjobs-bench --bin $(BIN) -q --n 2000 --handler exec -j 8 $(BENCH_FLAGS)
	$(BIN)/jetjobs-bench --bin $(BIN) -q --latency --stages 1 --rate 100 --duration 10s
	$(BIN)/jetjobs-bench --bin $(BIN) -q --latency --stages 3 --rate 10 --duration 10s

demo: build ## run the sample pipeline on this machine (MySQL at JETJOBS_MYSQL_DSN or a private MariaDB); Ctrl-C stops it
	$(GO) build -o $(BIN)/demo ./demo
	@$(BIN)/demo

chaos: ## the programs under faults: 20,000 keys, NATS 2.9 alone and a current 3-node cluster, seeds 1 2 3 (SEEDS=, CHAOS_FLAGS=)
	$(GO) build -o $(BIN)/ ./cmd/... ./internal/chaos/natsd
	@for seed in $(or $(SEEDS),1 2 3); do for variant in "--nats 2.9" "--nats current --cluster"; do \
	  echo "make chaos: seed $$seed $$variant"; \
	  $(BIN)/jetjobs-chaos --bin $(BIN) --keep --seed $$seed $$variant $(CHAOS_FLAGS) || exit 1; \
	done; done

soak: ## 1,000 jobs/s for 10 minutes, sampled every 10 s: memory, goroutines, connections, stream depth, lag; says what grew
	$(GO) build -o $(BIN)/ ./cmd/... ./internal/chaos/natsd
	$(BIN)/jetjobs-chaos soak --bin $(BIN)

clean: ## remove built binaries
	rm -rf $(BIN)
