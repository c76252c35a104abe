# Make targets are shortcuts; README's two commands work without make.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo none)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)

.PHONY: build run test bench bench-peers lint fmt ci clickhouse-up clickhouse-down

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/cohortsync ./cmd/cohortsync

run:
	$(GO) run ./cmd/cohortsync serve

test:
	$(GO) test -race -count=1 ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# cohortsync's consumer path against ClickHouse's own Kafka engine on the same
# landing (bench/peers). PEERS_FLAGS sets the size: the default is the 10M
# changes of docs/PERFORMANCE.md; PEERS_FLAGS='--messages 20000' is 1M.
PEERS_FLAGS ?= --messages 200000 --rounds 2
bench-peers: clickhouse-up
	$(GO) run ./bench/peers $(PEERS_FLAGS)

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
