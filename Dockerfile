# The jetjobs programs (scheduler, worker, jobsctl) as static binaries on Alpine.
#
#   docker build -t jetjobs .
#   docker run --rm jetjobs worker --help
#
# The runtime is Alpine rather than distroless because worker --exec runs handlers with
# /bin/sh -c, and the compose healthchecks use its wget. Add the tools your handlers need in a
# stage of your own: FROM jetjobs, then RUN apk add --no-cache python3 (for example).

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION}-alpine AS build
WORKDIR /src
# Dependencies first, so that a code change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Static: no cgo, so the binaries run on any Linux without a C library.
ENV CGO_ENABLED=0
RUN go build -trimpath -ldflags="-s -w" -o /out/ ./cmd/scheduler ./cmd/worker ./cmd/jobsctl

FROM alpine:3.22
RUN apk add --no-cache ca-certificates tzdata \
    && adduser -D -u 10001 jetjobs
COPY --from=build /out/ /usr/local/bin/
USER jetjobs
WORKDIR /home/jetjobs
# No entrypoint: the command names the program, e.g. "scheduler --metrics-addr :9090 db.__t".
CMD ["jobsctl", "help"]
