# syntax=docker/dockerfile:1
#
# The strata scheduler: its binary, the C libraries it links (glibc), CA
# certificates, and a non-root user (65532, "nonroot", as distroless), on an
# empty base: no shell, no package manager, nothing else to patch.
#
# It copies a prepared context, so no Rust toolchain runs in the build (see
# deploy/images/README.md, which also has the script that prepares it):
#
#   CONTEXT/bin/strata-scheduler        the binary, debug info stripped
#   CONTEXT/sysroot/                    the shared libraries `ldd` lists, at their paths
#   CONTEXT/certs/ca-certificates.crt   CAs for https registries and S3
#
#   strata build -f deploy/images/scheduler.Dockerfile -t REG/strata-scheduler:TAG --push CONTEXT
FROM scratch

COPY sysroot/ /
COPY certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY <<passwd <<group <<nsswitch.conf /etc/
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
passwd
root:x:0:
nonroot:x:65532:
group
passwd: files
group: files
hosts: files dns
nsswitch.conf

# WORKDIR under USER creates every missing directory owned by that user, so
# the parents are made first, as root.
WORKDIR /home
WORKDIR /var/lib
USER 65532:65532
WORKDIR /home/nonroot
WORKDIR /var/lib/strata-scheduler

COPY bin/strata-scheduler /usr/local/bin/strata-scheduler

# Defaults as environment variables rather than CMD flags: arguments given to
# the container (Kubernetes `args`, `docker run IMAGE --redis URL`) replace
# CMD, and the scheduler would then listen on loopback only; flags and the
# orchestrator's environment still override these.
ENV PATH=/usr/local/bin:/usr/bin:/bin \
    STRATA_LISTEN=0.0.0.0:7390 \
    STRATA_METRICS_LISTEN=0.0.0.0:9390 \
    STRATA_STATE=/var/lib/strata-scheduler
VOLUME ["/var/lib/strata-scheduler"]
# gRPC (BuildService, WorkerService, BlobService, health); /metrics, /healthz, /readyz.
EXPOSE 7390 9390
ENTRYPOINT ["/usr/local/bin/strata-scheduler"]
