# The operator's image for users who have Docker (`docker build -t sei-operator .`). Without Docker,
# `cargo xtask image` writes the same image (hack/image.sh, with crane). operator/tests/image.rs keeps the two
# in sync: the final stage is distroless and non-root, and user, entrypoint, cmd and labels match.

# ---- build: the release binary, linked against the glibc of Debian 12 (what the runtime stage has)
FROM docker.io/library/rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p sei-operator \
 && install -D -m 0755 target/release/sei-operator /out/sei-operator

# ---- runtime: distroless with glibc and libgcc (no shell, no package manager), user nonroot (65532)
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
ARG REVISION=""
LABEL org.opencontainers.image.title="sei-operator" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/sei-protocol/sei-operator-rs" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/sei-operator /usr/local/bin/sei-operator
USER 65532:65532
WORKDIR /
ENTRYPOINT ["/usr/local/bin/sei-operator"]
CMD ["run"]
