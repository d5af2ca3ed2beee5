# syntax=docker/dockerfile:1
# wabill container image: ghcr.io/wabill/wabill:0.1.0 (the tag is Cargo.toml's version).
#
#   docker build -t ghcr.io/wabill/wabill:0.1.0 .
#   docker run --rm -e WABILL_KAFKA_BROKERS=broker:9092 -p 9464:9464 ghcr.io/wabill/wabill:0.1.0
#
# Build stage: RocksDB and librdkafka compile from source (cargo builds them; about 12
# minutes on 2 cores cold). The packages are the ones scripts/install-deps.sh installs
# (clang/libclang for rocksdb's bindgen, make and pkg-config for librdkafka).
FROM rust:1-bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      clang libclang-dev make pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
# Cargo.toml declares the benches: the manifest does not parse without them.
COPY benches benches
# Embedded at compile time (include_str!): the sample rate card, the market map, the schemas.
COPY data/markets.csv data/markets.csv
COPY data/rates data/rates
COPY schemas schemas
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
 && cp target/release/wabill /usr/local/bin/wabill \
 && strip --strip-debug /usr/local/bin/wabill

# Runtime stage: glibc, libstdc++ (RocksDB) and zlib (librdkafka) are all the binary links.
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates libstdc++6 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 wabill \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/wabill --no-create-home \
      --shell /usr/sbin/nologin wabill \
 && mkdir -p /var/lib/wabill/state /etc/wabill \
 && chown -R 10001:10001 /var/lib/wabill
COPY --from=build /usr/local/bin/wabill /usr/local/bin/wabill
# A default configuration (the one deploy/ uses); compose and Kubernetes mount their own
# over it, and WABILL_* environment variables override it.
COPY deploy/wabill.toml /etc/wabill/wabill.toml
USER 10001:10001
WORKDIR /var/lib/wabill
# /metrics, /healthz, /readyz ([http] addr in the configuration)
EXPOSE 9464
ENTRYPOINT ["wabill"]
CMD ["run","--config","/etc/wabill/wabill.toml"]
