# syntax=docker/dockerfile:1
# escape=\
ARG BASE=busybox:latest
FROM ${BASE} AS build
ARG VERSION=1.0
ENV APP=/app PATH="/app/bin:$PATH" \
    GREETING="hello ${VERSION:-none}"
WORKDIR $APP
COPY --chown=1000:1000 --chmod=0755 src/ ./src/
ADD --checksum=sha256:0000000000000000000000000000000000000000000000000000000000000000 https://example.com/a.tar.gz /tmp/
RUN --mount=type=cache,target=/root/.cache,id=c1 \
    --mount=type=secret,id=token,required=false \
    --network=none \
    echo "${GREETING}" > /out && ls ${APP%/} ${VERSION/./-}
RUN <<EOT bash
set -e
echo heredoc $VERSION
EOT
FROM scratch AS final
COPY --from=build /out /out
LABEL org.opencontainers.image.title="seed" a=b
EXPOSE 8080/tcp
USER 1000:1000
HEALTHCHECK --interval=30s --timeout=3s CMD ["/bin/true"]
ONBUILD RUN echo later
SHELL ["/bin/sh", "-c"]
ENTRYPOINT ["/bin/app"]
CMD ["--flag"]
STOPSIGNAL SIGTERM
VOLUME /data
