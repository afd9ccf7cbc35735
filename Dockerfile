# One image with every inthub binary; compose.yaml picks the command.
# Built with CGO off: the services need no C library.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY . .
RUN CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -o /out/ inthub.dev/services/cmd/...

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 inthub \
 && mkdir -p /var/lib/inthub && chown inthub /var/lib/inthub
# Named volumes mounted at /var/lib/inthub start from this directory, owned
# by the service user.
COPY --from=build /out/ /usr/local/bin/
USER inthub
