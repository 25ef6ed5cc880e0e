# A multi-stage build that needs no registry: the base is a static busybox
# copied into the build context by scripts/quickstart.sh.
FROM scratch AS base
COPY rootfs/ /

FROM base AS greeting
ARG WHO=strata
RUN echo "Hello from ${WHO}" > /greeting

FROM base
COPY --from=greeting /greeting /etc/greeting
COPY --chmod=755 app.sh /usr/local/bin/app.sh
WORKDIR /srv
ENV GREETING_FILE=/etc/greeting
CMD ["/usr/local/bin/app.sh"]
