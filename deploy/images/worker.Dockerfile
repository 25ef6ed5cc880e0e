# syntax=docker/dockerfile:1
#
# The strata worker: its binary and runc (Debian's, which runs each RUN step),
# the C libraries both link (glibc, libseccomp), and CA certificates, on an
# empty base. Overlayfs is the kernel's, so nothing else is needed at run
# time. It runs as root, in a privileged container: runc creates namespaces,
# mounts overlayfs and procfs and manages cgroups (deploy/helm/strata/README.md
# explains the privileges). Its state directory must not be on the
# container's own overlay root: mount a volume there.
#
# It copies a prepared context, so no Rust toolchain runs in the build (see
# deploy/images/README.md, which also has the script that prepares it):
#
#   CONTEXT/bin/strata-worker           the binary, debug info stripped
#   CONTEXT/bin/runc                    runc (Debian's /usr/sbin/runc)
#   CONTEXT/sysroot/                    the shared libraries `ldd` lists for both, at their paths
#   CONTEXT/certs/ca-certificates.crt   CAs for https registries, S3 and ADD URLs
#
#   strata build -f deploy/images/worker.Dockerfile -t REG/strata-worker:TAG --push CONTEXT
FROM scratch

COPY sysroot/ /
COPY certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY <<passwd <<group <<nsswitch.conf /etc/
root:x:0:0:root:/root:/sbin/nologin
passwd
root:x:0:
group
passwd: files
group: files
hosts: files dns
nsswitch.conf

COPY bin/runc /usr/sbin/runc
COPY bin/strata-worker /usr/local/bin/strata-worker

USER 0:0
WORKDIR /var/lib/strata-worker
# The worker finds runc on PATH. Defaults as environment variables rather
# than CMD flags, so arguments given to the container do not drop them; the
# scheduler's address has no sensible default: set STRATA_SCHEDULER or
# pass --scheduler.
ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    STRATA_WORKER_STATE=/var/lib/strata-worker \
    STRATA_METRICS_LISTEN=0.0.0.0:9391
VOLUME ["/var/lib/strata-worker"]
# /metrics, /healthz, /readyz.
EXPOSE 9391
ENTRYPOINT ["/usr/local/bin/strata-worker"]
