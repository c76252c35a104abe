# Make targets are shortcuts; README's two commands work without make.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo none)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)

.PHONY: build run test bench lint fmt ci clickhouse-up clickhouse-down

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/cohortsync ./cmd/cohortsync

run:
	$(GO) run ./cmd/cohortsync serve

test:
	$(GO) test -race -count=1 ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

ci:
	CI=true bash .ci/run

# A local ClickHouse for the integration tests (data under .clickhouse/).
# Install it once with: bash scripts/clickhouse.sh install
clickhouse-up:
	bash scripts/clickhouse.sh up

clickhouse-down:
	bash scripts/clickhouse.sh down
