# syntax=docker/dockerfile:1
# The cohortsync image: a static binary (CGO_ENABLED=0) on distroless/static,
# running as the nonroot user (65532). Build from the repository root:
#
#   docker build -t cohortsync:local --build-arg VERSION=$(git describe --tags --always) .
#
# deploy/deploy_test.go checks this file against the binary's defaults.

FROM golang:1.26-bookworm AS build
WORKDIR /src
# Modules first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=none
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
        -o /out/cohortsync ./cmd/cohortsync && \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/healthcheck ./deploy/healthcheck && \
    mkdir -p /out/data/parquet

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/cohortsync /out/healthcheck /usr/local/bin/
# The data directory exists in the image, owned by nonroot, so that a fresh
# named volume mounted on it (or on its parquet/ folder) is writable.
COPY --from=build --chown=65532:65532 /out/data /var/lib/cohortsync
USER 65532:65532
WORKDIR /var/lib/cohortsync
# A container must listen on every interface, not on the binary's loopback default.
ENV COHORTSYNC_DATA_DIR=/var/lib/cohortsync \
    COHORTSYNC_HTTP_ADDR=0.0.0.0:8080
EXPOSE 8080
VOLUME ["/var/lib/cohortsync"]
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/usr/local/bin/healthcheck", "http://127.0.0.1:8080/readyz"]
ENTRYPOINT ["/usr/local/bin/cohortsync"]
CMD ["serve"]
