# Multi-stage build: compile in a Rust image with cmake, run in a slim image as a non-root
# user. The runtime stage validates the bundled config, so a broken image fails to build.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY clients ./clients
COPY benches ./benches
COPY examples ./examples
COPY tests ./tests
RUN cargo build --release --locked --bin sse-sidecar

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/sse-sidecar --create-home sidecar
COPY --from=build /src/target/release/sse-sidecar /usr/local/bin/sse-sidecar
COPY conf/sidecar.yaml /etc/sse-sidecar/sidecar.yaml
RUN ["/usr/local/bin/sse-sidecar", "check", "--config", "/etc/sse-sidecar/sidecar.yaml"]
USER sidecar
WORKDIR /var/lib/sse-sidecar
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/sse-sidecar"]
CMD ["--config", "/etc/sse-sidecar/sidecar.yaml"]
