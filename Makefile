# jetjobs developer entry points. `make help` lists them.
GO        ?= go
BIN       := bin
PKGS      := ./...
TEST_FLAGS ?= -race -timeout 30m
BENCH     ?= .
BENCHTIME ?= 1x

.PHONY: help build test lint bench demo clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-8s %s\n", $$1, $$2}'

build: ## build the three programs into bin/
	$(GO) build -o $(BIN)/ ./cmd/...

test: ## run every test (unit and integration, against MariaDB/MySQL and NATS) with the race detector
	$(GO) vet $(PKGS)
	$(GO) test $(TEST_FLAGS) $(PKGS)

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

bench: ## run the benchmarks and print their figures (BENCH=regexp, BENCHTIME=Nx or duration)
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchtime $(BENCHTIME) -benchmem $(PKGS)

demo: build ## run the sample pipeline on this machine (MySQL at JETJOBS_MYSQL_DSN or a private MariaDB); Ctrl-C stops it
	$(GO) build -o $(BIN)/demo ./demo
	@$(BIN)/demo

clean: ## remove built binaries
	rm -rf $(BIN)
