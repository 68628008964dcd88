# gensendrep: multi-stage build on Debian 12; the runtime image has only the shared libraries.
FROM debian:12-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
      gcc make pkg-config libc6-dev libmicrohttpd-dev libgnutls28-dev libjansson-dev libsqlite3-dev libpq-dev \
      libhiredis-dev libssl-dev libcurl4-openssl-dev libnats-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile ./
COPY scripts ./scripts
COPY tools ./tools
COPY src ./src
COPY openapi ./openapi
COPY docs/templates ./docs/templates
RUN make gensendrep

FROM debian:12-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
      libmicrohttpd12 libjansson4 libsqlite3-0 libpq5 libhiredis0.14 libssl3 libcurl4 libnats3.4 curl ca-certificates tzdata \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/gensendrep --create-home gensendrep \
    && install -d -o gensendrep -g gensendrep -m 0750 /var/lib/gensendrep/data
COPY --from=build /src/gensendrep /usr/local/bin/gensendrep
USER gensendrep
WORKDIR /var/lib/gensendrep
ENV HOST=0.0.0.0 PORT=8000 DATABASE_URL=sqlite:/var/lib/gensendrep/data/gensendrep.db
# The volume's directory exists in the image, owned by the service user: a new named volume
# starts as a copy of it, so the non-root server can write there.
VOLUME ["/var/lib/gensendrep/data"]
EXPOSE 8000
# Shell form so that the check asks the port the server listens on (PORT at run time), over
# HTTPS when TLS_CERT_FILE is set (-k: the certificate names the public host, not 127.0.0.1).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD s=http; [ -z "$TLS_CERT_FILE" ] || s=https; \
      curl -fsSk --max-time 2 "$s://127.0.0.1:${PORT:-8000}/api/v1/health" >/dev/null || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/gensendrep"]
