# syntax=docker/dockerfile:1
#
# One image for all three services (http-danmaku, ws-video, ws-stream); docker-compose.yml picks
# the binary with `command:`. The pages in web/ are embedded into the binaries at compile time, so
# the runtime stage needs no web dir. The cache mounts need BuildKit (Docker's default builder
# since 23.0; podman/buildah understand them too).
#
# Checked with podman 4.3 (buildah) and podman-compose 1.0.3 on Debian 12, not yet with Docker
# itself. No image registry was reachable, so the base images were made locally
# (debian:bookworm-slim by debootstrap, rust:1-bookworm from it plus the Rust toolchain).
# scripts/compose-check.sh repeats the check: it builds this image, runs docker-compose.yml, uses
# every service, stops them with SIGTERM and starts them again on the same volume.

############################################################################### builder
FROM rust:1-bookworm AS builder
WORKDIR /src

# Copy only what the build reads, so editing scripts, CI or compose files does not invalidate the
# build step. A new workspace member must be added here as well as to Cargo.toml, or cargo will
# fail to load the workspace.
COPY Cargo.toml Cargo.lock ./
COPY shared-model/ shared-model/
COPY store/ store/
COPY service-kit/ service-kit/
COPY http-danmaku/ http-danmaku/
COPY ws-video/ ws-video/
COPY ws-stream/ ws-stream/
# The page tests are a member too; `--bins` does not build them, but the manifest must be there.
COPY e2e/ e2e/
COPY cli/ cli/
# service-kit embeds ../web (rust-embed), i.e. /src/web here.
COPY web/ web/

# The registry and target dir live in cache mounts, which are not part of the image, so the
# binaries are copied out to /out inside the same RUN. `sharing=locked` makes concurrent builds
# (compose builds the three services at once) take turns instead of corrupting the target dir;
# the second and third find everything already built.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bins \
 && mkdir -p /out \
 && cp target/release/http-danmaku target/release/ws-video target/release/ws-stream \
       target/release/danmaku /out/

############################################################################### runtime
FROM debian:bookworm-slim AS runtime

# No extra packages: the binaries need only glibc and libgcc_s (both in the slim image); SQLite is
# bundled and nothing makes outbound TLS calls, so no ca-certificates yet. Add it when something
# does.
#
# The data dir is created here and owned by the service user, so a fresh named volume mounted at
# /data starts with that owner (Docker and podman copy the image's ownership into an empty named
# volume; checked with podman: the volume's files belong to 10001).
# (Not `--system`: system accounts are meant to be below 1000, and useradd warns about 10001.)
RUN groupadd --gid 10001 danmaku \
 && useradd --uid 10001 --gid danmaku --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin danmaku \
 && mkdir -p /data \
 && chown danmaku:danmaku /data

COPY --from=builder /out/ /usr/local/bin/

# Inside a container the loopback default would be unreachable through published ports.
ENV DANMAKU_BIND=0.0.0.0
WORKDIR /data
USER danmaku

EXPOSE 8081 8082 8083

# The services stop gracefully on SIGTERM (close sockets with 1001, answer waiting long polls, keep
# every acknowledged comment, exit 0). The binary is PID 1 (exec-form CMD), so it gets the signal.
STOPSIGNAL SIGTERM

# No HEALTHCHECK: every service answers GET /healthz, but this image has no curl or wget and the
# binaries have no self-probe mode, so nothing inside the container can ask. Probe from outside
# (curl http://127.0.0.1:8081/healthz) until a binary grows a probe subcommand.

# The default when run by hand; compose overrides it per service.
CMD ["http-danmaku"]
