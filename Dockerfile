# syntax=docker/dockerfile:1
# amarula-node: a static binary on distroless, running as non-root.
#   docker build -t amarula/amarula-node:dev .
# Tested by deploy/dockerfile_test.go (structure, and that the binary builds
# with CGO_ENABLED=0 and is statically linked).

FROM golang:1.26 AS build
WORKDIR /src
# Modules first: this layer is cached until go.mod/go.sum change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -buildvcs=false \
      -ldflags="-s -w" \
      -o /out/amarula-node ./cmd/node \
 && mkdir -p /out/data

# distroless/static: CA certificates, tzdata, /etc/passwd with nonroot
# (65532), no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/amarula-node /usr/local/bin/amarula-node
# The data dir (embedded store in single-node mode, admin key, media
# fallback), writable by the node user; mount a volume here to keep it.
COPY --from=build --chown=65532:65532 /out/data /var/lib/amarula
ENV AMARULA_DATA_DIR=/var/lib/amarula \
    AMARULA_LOG_FORMAT=json
USER 65532:65532
# HTTP API, dashboard, /metrics; memberlist gossip (TCP and UDP).
EXPOSE 8080/tcp 7946/tcp 7946/udp
ENTRYPOINT ["/usr/local/bin/amarula-node"]
