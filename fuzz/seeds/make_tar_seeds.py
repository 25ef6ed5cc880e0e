#!/usr/bin/env python3
"""Writes the tar_reader seed corpus (tiny layer blobs) next to this script.

Run from anywhere: python3 fuzz/seeds/make_tar_seeds.py (needs the zstd CLI).
The output is deterministic; the blobs are committed, this script says how
they were made.
"""
import gzip
import io
import os
import subprocess
import tarfile

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tar_reader")


def member(name, kind=tarfile.REGTYPE, data=b"", link="", mode=0o644, pax=None, dev=(0, 0)):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.linkname = link
    info.mode = 0o755 if kind == tarfile.DIRTYPE else mode
    info.mtime = 1_600_000_000
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.devmajor, info.devminor = dev
    if pax:
        info.pax_headers = pax
    buf = info.tobuf(tarfile.PAX_FORMAT if pax else tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
    if info.size:
        buf += data + b"\0" * (-len(data) % 512)
    return buf


def tar(*members):
    # Two zero blocks end the archive; no padding to a 10 KiB record.
    return b"".join(members) + b"\0" * 1024


def write(name, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)


def main():
    os.makedirs(OUT, exist_ok=True)
    basic = tar(
        member("d/", tarfile.DIRTYPE),
        member("d/f", data=b"hello\n"),
        member("d/l", tarfile.SYMTYPE, link="f"),
        member("d/h", tarfile.LNKTYPE, link="d/f"),
    )
    write("basic.tar", basic)
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0) as g:
        g.write(basic)
    write("basic.tar.gz", gz.getvalue())
    zst = subprocess.run(["zstd", "-q", "-c", "--no-check", "-19"], input=basic,
                         capture_output=True, check=True).stdout
    write("basic.tar.zst", zst)
    write("pax.tar", tar(
        member("p/", tarfile.DIRTYPE),
        member("p/" + "n" * 120, data=b"x", pax={
            "mtime": "1700000000.123456789",
            "SCHILY.xattr.user.k": "v",
            "uid": "1000",
        }),
    ))
    write("whiteouts.tar", tar(
        member("a/", tarfile.DIRTYPE),
        member("a/old", data=b"o"),
        member("a/.wh..wh..opq", mode=0),
        member(".wh.b", mode=0),
        member("a/new", data=b"n"),
    ))
    write("special.tar", tar(
        member("dev/", tarfile.DIRTYPE),
        member("dev/null", tarfile.CHRTYPE, dev=(1, 3)),
        member("dev/fifo", tarfile.FIFOTYPE),
        member("dev/long-name-" + "x" * 100, data=b"gnu long name"),
    ))
    write("escape.tar", tar(
        member("up", tarfile.SYMTYPE, link="../.."),
        member("up/x", data=b"x"),
        member("../y", data=b"y"),
    ))


if __name__ == "__main__":
    main()
