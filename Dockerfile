# The kite binary in a small image, for `docker compose` testnets generated
# by `kite testnet init --hosts ...` (see docs/OPERATING.md).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p kite

FROM debian:bookworm-slim
COPY --from=build /src/target/release/kite /usr/local/bin/kite
ENTRYPOINT []
CMD ["kite", "--help"]
