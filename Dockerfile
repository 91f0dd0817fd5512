# Respawn: one image, every component (`respawn proxy|controller|api|up`).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin respawn

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --user-group --no-create-home respawn
COPY --from=build /src/target/release/respawn /usr/local/bin/respawn
USER 10001:10001
EXPOSE 25565 9100 8080
ENTRYPOINT ["/usr/local/bin/respawn"]
