//! strata's images equal BuildKit's: each test builds one Dockerfile with
//! a real buildkitd and with strata's embedded builder, from the same
//! context and the same busybox base image in a loopback registry, and
//! requires the same flattened files (mtimes aside), the same image
//! `config`, the same history (`created_by`, `empty_layer`, `comment`) and
//! as many layers.

use std::io::Write as _;
use std::os::unix::fs::{PermissionsExt as _, symlink};
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;
use strata_tests::equivalence::{Case, Equivalence};

/// `/etc/passwd` and `/etc/group` for the `--chown` and USER cases.
const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n\
    odd:x:1005:1002::/:/bin/sh\n";
const GROUP: &str = "root:x:0:\napp:x:1000:\nstaff:x:1002:app\n";

fn write(ctx: &Path, rel: &str, content: &str) {
    let path = ctx.join(rel);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, content).expect("write context file");
}

fn chmod(ctx: &Path, rel: &str, mode: u32) {
    std::fs::set_permissions(ctx.join(rel), std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn no_files(_: &Path) {}

fn users(ctx: &Path) {
    write(ctx, "passwd", PASSWD);
    write(ctx, "group", GROUP);
}

fn check(case: Case<'_>) {
    Equivalence::new().assert_equivalent(&case);
}

#[test]
fn deletions_and_replaced_directories() {
    check(Case {
        name: "deletions",
        dockerfile: "FROM {BASE}\n\
            RUN mkdir -p /d/sub /keep /was-dir/in && echo a > /d/sub/f && echo b > /d/g \
                && echo k > /keep/k && echo k2 > /keep/k2 && echo x > /gone \
                && echo y > /was-file && echo z > /was-dir/in/z\n\
            RUN rm -r /d /gone /bin/wc /keep/k && mkdir /d && echo new > /d/new\n\
            RUN rm -r /was-dir /was-file && echo now-a-file > /was-dir && mkdir /was-file\n\
            RUN true\n\
            RUN true\n\
            RUN rm /d/new && echo again > /d/new\n",
        build_args: &[],
        context: &no_files,
    });
}

#[test]
fn hardlinks_symlinks_fifos_and_special_modes() {
    check(Case {
        name: "links",
        dockerfile: "FROM {BASE}\n\
            RUN echo data > /f && busybox ln /f /hard && busybox ln -s /f /abs-link \
                && busybox ln -s f /rel-link && busybox ln -s missing /dangling \
                && busybox mkfifo /fifo && mkdir /sticky /sgid-dir \
                && busybox chmod 1777 /sticky && busybox chmod 2775 /sgid-dir \
                && echo s > /suid && busybox chmod 4755 /suid \
                && echo g > /sgid && busybox chmod 2711 /sgid && busybox chmod 0600 /f\n\
            RUN busybox ln /f /hard-later && busybox ln /bin/busybox /bin/bb-hard \
                && echo changed > /hard\n\
            RUN mkdir -p '/names/with space' /names/ünïcödé \
                /names/a-directory-name-that-is-long-enough-to-need-more-than-one-hundred-bytes/of-path-in-total-when-joined \
                && touch /names/ünïcödé/é '/names/with space/empty' \
                /names/a-directory-name-that-is-long-enough-to-need-more-than-one-hundred-bytes/of-path-in-total-when-joined/file \
                && echo big > /big-ids && busybox chown 3000000:3000001 /big-ids \
                && busybox mknod /null-device c 1 3 && busybox chmod 0000 /big-ids\n\
            COPY hl/ /hl/\n",
        build_args: &[],
        context: &|ctx| {
            write(ctx, "hl/a", "linked\n");
            std::fs::hard_link(ctx.join("hl/a"), ctx.join("hl/b")).expect("hardlink");
            symlink("a", ctx.join("hl/to-a")).expect("symlink");
            write(ctx, "hl/suid", "#!/bin/sh\n");
            chmod(ctx, "hl/suid", 0o4755);
            std::fs::create_dir(ctx.join("hl/sticky")).expect("mkdir");
            chmod(ctx, "hl/sticky", 0o1777);
            write(ctx, "hl/empty", "");
        },
    });
}

#[test]
fn what_run_steps_see() {
    // buildkitd's tracing (a trace socket in /dev, OTEL_* variables and a
    // per-run TRACEPARENT) is left out: strata has no such socket. So is
    // NoNewPrivs: strata sets it on purpose (docs/security.md, checked by
    // sandbox.rs), BuildKit does not.
    let probe = "env | busybox grep -v -E '^(OTEL_|TRACEPARENT=)' | busybox sort > env.txt \
        && busybox id > id.txt && busybox hostname > hostname.txt \
        && cat /etc/hosts > hosts.txt && cat /etc/resolv.conf > resolv.txt \
        && umask > umask.txt && pwd > pwd.txt \
        && busybox grep -E '^(Cap|Seccomp)' /proc/self/status > status.txt \
        && ls -a /dev | busybox grep -v -x otel-grpc.sock > dev.txt";
    let dockerfile = format!(
        "FROM {{BASE}}\n\
         ARG A1=one\n\
         ENV E1=env\n\
         COPY passwd group /etc/\n\
         RUN mkdir -p /root-probe /home/app && busybox chown app:app /home/app\n\
         WORKDIR /root-probe\n\
         RUN {probe}\n\
         USER app\n\
         WORKDIR /home/app\n\
         RUN {probe}\n"
    );
    check(Case {
        name: "run-environment",
        dockerfile: &dockerfile,
        build_args: &[],
        context: &users,
    });
}

#[test]
fn users_and_workdirs() {
    check(Case {
        name: "users",
        dockerfile: "FROM {BASE}\n\
            COPY passwd group /etc/\n\
            RUN mkdir -p /home/app && busybox chown app:app /home/app\n\
            WORKDIR /bin\n\
            WORKDIR /srv/new/deep\n\
            USER app\n\
            COPY passwd /home/app/copied-as-app\n\
            WORKDIR /home/app/work\n\
            RUN echo mine > mine && mkdir sub && echo x > sub/x\n\
            WORKDIR /created-by-app/nested\n\
            USER 1001:1002\n\
            WORKDIR /numeric\n\
            RUN echo numeric > file && mkdir dir\n\
            WORKDIR rel\n\
            USER app:staff\n\
            RUN echo grouped > /home/app/grouped\n\
            USER 1005\n\
            WORKDIR /uid-only\n\
            RUN busybox id > id && echo uid-only > file\n\
            USER odd\n\
            WORKDIR /by-name\n\
            USER root\n\
            WORKDIR /srv\n\
            RUN echo root > /srv/file\n",
        build_args: &[],
        context: &users,
    });
}

#[test]
fn copy_sources_destinations_owners_and_modes() {
    check(Case {
        name: "copy",
        dockerfile: "FROM {BASE}\n\
            COPY passwd group /etc/\n\
            COPY dir /dst/\n\
            COPY dir/ /dst2\n\
            COPY dir/sub /dst3\n\
            COPY *.txt /txt/\n\
            COPY dir/* /star/\n\
            COPY dir-link /via-dir-link/\n\
            COPY dir/l* /star-link/\n\
            COPY a?.txt notes.md /q/\n\
            COPY --chown=app:app a1.txt /owned-name\n\
            COPY --chown=1001:1002 dir /owned-id/\n\
            COPY --chown=app a1.txt /owned-user\n\
            COPY --chown=app:staff a1.txt /owned-user-group\n\
            COPY --chown=1005 a1.txt /owned-uid-only\n\
            COPY --chown=odd a1.txt /owned-odd-name\n\
            COPY --chown=:staff a1.txt /owned-group-only\n\
            COPY --chown=nosuchuser:nosuchgroup a1.txt /owned-unknown\n\
            RUN mkdir -p /existing/sub && busybox chmod 0700 /existing/sub \
                && busybox chown 1000:1000 /existing/sub\n\
            COPY dir/ /existing/\n\
            COPY --chmod=0640 a1.txt /mode640\n\
            COPY --chmod=755 dir /dirmode/\n\
            COPY --chmod=0750 a1.txt /chmod-parents/new/\n\
            COPY --chmod=0700 dir /chmod-dir/\n\
            COPY --chmod=0777 a1.txt /chmod-777/\n\
            COPY --chmod=go-r dir /chmod-symbolic-dir/\n\
            COPY --chmod=u=rwx,g=rx,o= a1.txt /mode-symbolic\n\
            COPY a1.txt /bin/\n\
            COPY b1.txt /\n\
            COPY a2.txt /bin\n\
            COPY b1.txt /newname\n\
            COPY b1.txt /newdir/\n\
            COPY b1.txt notes.md /deep/new/path/\n\
            COPY dir/link /copied-link\n\
            COPY a2.txt /newname\n\
            RUN mkdir -p /usr/lib && busybox ln -s usr/lib /lib\n\
            COPY a1.txt /lib/\n\
            RUN echo orig > /target-file && busybox ln -s target-file /link-to-file\n\
            COPY a1.txt /link-to-file\n\
            COPY a2.txt /lib\n\
            RUN busybox ln -s /missing-dir/file /dangling\n\
            COPY b1.txt /dangling\n\
            COPY . /ctx/\n\
            WORKDIR /lib/under-link\n\
            WORKDIR /work\n\
            COPY a1.txt .\n\
            COPY a2.txt relative/\n",
        build_args: &[],
        context: &|ctx| {
            users(ctx);
            write(ctx, "dir/a.txt", "a\n");
            write(ctx, "dir/sub/b.txt", "b\n");
            write(ctx, "dir/exec.sh", "#!/bin/sh\n");
            chmod(ctx, "dir/exec.sh", 0o755);
            chmod(ctx, "dir/sub", 0o700);
            symlink("a.txt", ctx.join("dir/link")).expect("symlink");
            symlink("dir", ctx.join("dir-link")).expect("symlink");
            // Sizes all different: once, BuildKit's reference build took
            // b1.txt for a2.txt (same size, same second; the suite shares
            // one buildkitd), and /newname, which the last COPY fills
            // from a2.txt, came out as b1's.
            write(ctx, "a1.txt", "a1\n");
            write(ctx, "a2.txt", "a2 second\n");
            write(ctx, "b1.txt", "b1 third file\n");
            write(ctx, "notes.md", "notes\n");
            write(ctx, "secret.key", "never copied\n");
            write(ctx, "dir/ignored.tmp", "never copied\n");
            write(ctx, ".dockerignore", "secret.key\n**/*.tmp\n");
        },
    });
}

#[test]
fn copy_link_parents_and_exclude() {
    check(Case {
        name: "copy-flags",
        dockerfile: "FROM {BASE}\n\
            RUN mkdir -p /usr/lib /opt/app && busybox ln -s usr/lib /lib \
                && busybox chmod 0750 /opt/app\n\
            COPY --link a1.txt /lib/\n\
            COPY --link a2.txt /opt/app/\n\
            COPY --link --chown=1000:1000 dir /linked-dir/\n\
            COPY --parents dir/sub/b.txt dir/a.txt /parents/\n\
            COPY --parents ./dir/./sub /pivot/\n\
            COPY --exclude=*.sh --exclude=sub dir /excluded/\n\
            COPY --exclude=**/b.txt dir /excluded2/\n",
        build_args: &[],
        context: &|ctx| {
            write(ctx, "dir/a.txt", "a\n");
            write(ctx, "dir/exec.sh", "#!/bin/sh\n");
            write(ctx, "dir/sub/b.txt", "b\n");
            write(ctx, "a1.txt", "a1\n");
            write(ctx, "a2.txt", "a2\n");
        },
    });
}

/// A tarball (gzip-compressed if `gzip`) with a directory, files with
/// owners and modes, a symlink and a hardlink.
fn tarball(path: &Path, gzip: bool) {
    let mut tar = tar::Builder::new(Vec::new());
    let header = |kind: tar::EntryType, mode: u32, uid: u64, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(uid);
        h.set_size(size);
        h.set_mtime(1_600_000_000);
        h
    };
    let mut dir = header(tar::EntryType::Directory, 0o750, 0, 0);
    tar.append_data(&mut dir, "pkg/", std::io::empty())
        .expect("tar");
    let mut file = header(tar::EntryType::Regular, 0o640, 1000, 5);
    tar.append_data(&mut file, "pkg/file", &b"file\n"[..])
        .expect("tar");
    let mut exe = header(tar::EntryType::Regular, 0o755, 0, 10);
    tar.append_data(&mut exe, "pkg/bin/tool", &b"#!/bin/sh\n"[..])
        .expect("tar");
    let mut link = header(tar::EntryType::Symlink, 0o777, 0, 0);
    tar.append_link(&mut link, "pkg/link", "file").expect("tar");
    let mut hard = header(tar::EntryType::Link, 0o640, 1000, 0);
    tar.append_link(&mut hard, "pkg/hard", "pkg/file")
        .expect("tar");
    let mut bytes = tar.into_inner().expect("finish tar");
    if gzip {
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(&bytes).expect("gzip");
        bytes = gz.finish().expect("finish gzip");
    }
    std::fs::File::create(path)
        .and_then(|mut f| f.write_all(&bytes))
        .expect("write tarball");
}

#[test]
fn add_extracts_local_archives() {
    check(Case {
        name: "add",
        dockerfile: "FROM {BASE}\n\
            ADD archive.tar.gz /opt/\n\
            ADD archive.tar.gz /opt2\n\
            ADD --chown=1001:1001 archive.tar.gz /owned/\n\
            ADD notes.txt /notes\n\
            ADD http://{REGISTRY}/v2/ /fetched/\n\
            ADD http://{REGISTRY}/v2/ /fetched-file\n\
            ADD plain.tar /plain/\n\
            RUN mkdir -p /merge/pkg && echo old > /merge/pkg/old && echo old > /merge/pkg/file\n\
            ADD archive.tar.gz /merge/\n\
            ADD --chmod=0700 archive.tar.gz /add-chmod-archive/new/\n\
            ADD --chmod=0700 notes.txt /add-chmod/new/\n",
        build_args: &[],
        context: &|ctx| {
            tarball(&ctx.join("archive.tar.gz"), true);
            tarball(&ctx.join("plain.tar"), false);
            write(ctx, "notes.txt", "notes\n");
        },
    });
}

#[test]
fn env_and_arg_expansion_with_build_args() {
    check(Case {
        name: "env-arg",
        dockerfile: "ARG GLOBAL=g-default\n\
            ARG BASE_IMAGE={BASE}\n\
            FROM ${BASE_IMAGE}\n\
            ARG TARGETARCH\n\
            ARG TARGETPLATFORM BUILDPLATFORM\n\
            ARG GLOBAL\n\
            ARG NAME=default\n\
            ARG FROMCLI\n\
            ARG OVERRIDDEN=default\n\
            ARG NOVAL\n\
            ENV LEGACY value with spaces\n\
            ENV SHADOW=from-env FIRST=1\n\
            ENV FIRST=2 SECOND=$FIRST\n\
            ARG SHADOW=from-arg\n\
            ENV GREETING=\"hello ${NAME}\" EMPTY=\"\"\n\
            ENV DIR=/opt/$NAME PATH=/bin:/opt/bin\n\
            WORKDIR $DIR\n\
            RUN echo \"$GREETING $FROMCLI $GLOBAL ${UNSET:-fallback} ${NAME:+set}\" > out\n\
            COPY f ${DIR}/f-${FROMCLI}\n\
            ENV NAME=overridden\n\
            RUN echo \"$NAME $OVERRIDDEN $LEGACY $SHADOW $SECOND $TARGETARCH $TARGETPLATFORM\" > name\n\
            RUN [\"/bin/sh\", \"-c\", \"echo exec form $NAME > exec\"]\n\
            CMD [\"run\"]\n\
            ENTRYPOINT [\"/bin/sh\"]\n\
            LABEL version=${FROMCLI} greeting=\"$GREETING\"\n",
        build_args: &[("FROMCLI", "cli-value"), ("OVERRIDDEN", "from-cli")],
        context: &|ctx| write(ctx, "f", "f\n"),
    });
}

#[test]
fn multi_stage_copies_from_stages_and_images() {
    check(Case {
        name: "multi-stage",
        dockerfile: "FROM {BASE} AS builder\n\
            RUN mkdir -p /out/sub && echo built > /out/artifact \
                && busybox ln -s artifact /out/link && echo s > /out/sub/s \
                && busybox ln /out/artifact /out/sub/hard && echo mine > /out/owned \
                && busybox chown 1000:1001 /out/owned && busybox chmod 4711 /out/owned\n\
            ARG IN_BUILDER=from-builder\n\
            FROM builder AS extended\n\
            RUN echo \"ext $IN_BUILDER\" > /out/ext\n\
            FROM {BASE}\n\
            COPY --from=builder /out /from-builder\n\
            COPY --from=builder /out/ /contents/\n\
            COPY --from=extended /out/ext /out/artifact /two/\n\
            COPY --from=0 /out/link /by-index-link\n\
            COPY --from={BASE} /bin/busybox /bb\n\
            COPY --from=builder --chown=1000:1000 /out/sub /owned-sub\n\
            RUN --mount=type=bind,from=builder,source=/out,target=/mnt/out \
                --mount=type=bind,from={BASE},target=/mnt/base \
                cat /mnt/out/artifact > /bound-from-stage && ls /mnt/base/bin > /bound-from-image\n",
        build_args: &[],
        context: &no_files,
    });
}

#[test]
fn heredocs_in_run_and_copy() {
    check(Case {
        name: "heredocs",
        dockerfile: "FROM {BASE}\n\
            ARG WHO=heredoc\n\
            RUN <<EOF\n\
            echo one > /h1\n\
            echo \"two $WHO\" >> /h1\n\
            EOF\n\
            RUN <<'EOF'\n\
            echo '$WHO stays' > /h2\n\
            EOF\n\
            RUN <<EOF\n\
            #!/bin/sh\n\
            echo shebang > /h3\n\
            EOF\n\
            RUN cat <<A > /h4 && cat <<B >> /h4\n\
            first\n\
            A\n\
            second\n\
            B\n\
            COPY <<EOF /h5\n\
            content $WHO\n\
            EOF\n\
            COPY <<'EOF' /h6\n\
            literal $WHO\n\
            EOF\n\
            COPY <<one <<two /hdir/\n\
            1\n\
            one\n\
            2\n\
            two\n\
            COPY --chmod=755 <<EOF /script.sh\n\
            #!/bin/sh\n\
            EOF\n\
            RUN <<-EOF\n\
            \techo tabs-stripped > /h7\n\
            \tEOF\n",
        build_args: &[],
        context: &no_files,
    });
}

#[test]
fn run_cache_bind_and_tmpfs_mounts() {
    check(Case {
        name: "mounts",
        dockerfile: "FROM {BASE}\n\
            RUN --mount=type=cache,target=/cache,id=eq-cache \
                echo cached > /cache/x && cat /cache/x > /first\n\
            RUN --mount=type=cache,target=/cache,id=eq-cache \
                cat /cache/x > /second && ls -a /cache > /listing\n\
            RUN --mount=type=cache,target=/var/cache/new \
                mkdir -p /var/cache/new/sub && echo hi > /var/cache/new/sub/f && echo done > /done\n\
            RUN --mount=type=bind,source=f,target=/mnt/in/f --mount=type=tmpfs,target=/scratch \
                cat /mnt/in/f > /bound && echo t > /scratch/t\n\
            RUN --mount=type=cache,target=/owned-cache,uid=1000,gid=1001,mode=0700 \
                --mount=type=cache,target=/default-cache \
                busybox stat -c '%u %g %a' /owned-cache /default-cache > /cache-meta\n",
        build_args: &[],
        context: &|ctx| write(ctx, "f", "bound\n"),
    });
}

#[test]
fn metadata_instructions() {
    check(Case {
        name: "metadata",
        dockerfile: "FROM {BASE}\n\
            LABEL a=1 \"b c\"=\"d e\"\n\
            LABEL a=2 multi=\"line one \\\n\
            line two\"\n\
            MAINTAINER someone <someone@example.com>\n\
            EXPOSE 80 443/tcp 53/udp 8000-8001\n\
            VOLUME /data\n\
            VOLUME [\"/logs\", \"/more\"]\n\
            RUN mkdir -p /data/sub && echo kept > /data/sub/file\n\
            STOPSIGNAL SIGINT\n\
            HEALTHCHECK --interval=30s --timeout=5s --start-period=1s --retries=2 \
                CMD wget -q localhost || exit 1\n\
            SHELL [\"/bin/sh\", \"-ec\"]\n\
            RUN echo shell > /shell\n\
            ENTRYPOINT [\"/bin/sh\", \"-c\"]\n\
            CMD echo hi\n\
            ONBUILD RUN echo onbuild > /onbuild\n\
            ONBUILD COPY a /a\n\
            USER 1000\n",
        build_args: &[],
        context: &no_files,
    });
}

#[test]
fn onbuild_triggers_and_shell_form_entrypoint() {
    check(Case {
        name: "onbuild",
        dockerfile: "FROM {BASE} AS parent\n\
            ONBUILD RUN echo triggered > /triggered\n\
            ONBUILD ENV TRIGGERED=yes\n\
            ENTRYPOINT echo shell form\n\
            HEALTHCHECK NONE\n\
            FROM parent\n\
            CMD echo child\n",
        build_args: &[],
        context: &no_files,
    });
}
