# syntax=docker/dockerfile:1
# One image, both programs: strom-broker (run by the pods of a KafkaCluster) and
# strom-operator (run by the Helm chart). Build from the repository root:
#   docker build -t strom:dev .

# Builder: the whole workspace is copied because Cargo needs every member's manifest,
# but only the two binaries are compiled.
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the target directory between builds; the binaries
# are copied out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p strom-broker -p strom-operator \
 && mkdir -p /out \
 && cp target/release/strom-broker target/release/strom-operator /out/

# Runtime: a small Debian with a shell (the broker pods compute their node id with
# /bin/sh) and CA certificates, running as an unprivileged user.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 strom \
 && useradd --system --uid 10001 --gid strom --home-dir /var/lib/strom --shell /usr/sbin/nologin strom \
 && mkdir -p /var/lib/strom \
 && chown strom:strom /var/lib/strom
COPY --from=builder /out/strom-broker /out/strom-operator /usr/local/bin/
USER 10001:10001
WORKDIR /var/lib/strom
EXPOSE 9092 9093 9644
# Without arguments: a single-node broker. The operator's pods and the chart set their
# own commands.
CMD ["/usr/local/bin/strom-broker"]
