# syntax=docker/dockerfile:1
# kpiwatch agent image: `docker build -t kpiwatch:0.1.0 .`
#
# Build stage: the release binary. tract needs glibc's libm, and reqwest uses rustls,
# so the runtime needs glibc and libgcc but no OpenSSL: distroless "cc" fits.
# No HEALTHCHECK: Kubernetes probes /-/healthy and /-/ready (see deploy/).
ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin kpiwatch \
 && install -D -m 0755 target/release/kpiwatch /out/usr/bin/kpiwatch \
 && strip /out/usr/bin/kpiwatch
# Models (repo models/ without the training code and the test fixtures: *.onnx and the
# model cards), the default config, an empty state directory owned by the runtime user
# (distroless has no shell to create it later).
RUN mkdir -p /out/usr/share/kpiwatch/models /out/etc/kpiwatch /out/var/lib/kpiwatch \
 && if [ -d models ]; then cp -r models/. /out/usr/share/kpiwatch/models/; fi \
 && find /out/usr/share/kpiwatch/models -mindepth 1 -maxdepth 1 \( -name train -o -name golden \) -exec rm -rf {} + \
 && find /out/usr/share/kpiwatch/models \( -name '*.py' -o -name '__pycache__' -o -name '.gitignore' \) -exec rm -rf {} + \
 && cp config/kpiwatch.example.yaml /out/etc/kpiwatch/kpiwatch.yaml \
 && chown -R 65532:65532 /out/var/lib/kpiwatch

# Runtime: distroless, non-root (uid/gid 65532), no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /
USER 65532:65532
EXPOSE 9847
VOLUME ["/var/lib/kpiwatch"]
ENTRYPOINT ["/usr/bin/kpiwatch"]
CMD ["run", "--config=/etc/kpiwatch/kpiwatch.yaml"]
