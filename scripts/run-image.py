"""Run an image built by `make image` the way the Kubernetes Job runs it, without a container engine.

    python3 scripts/run-image.py [-u UID:GID] [-e NAME=VALUE]... [-v HOST:PATH[:rw]]... [--tmpfs PATH]...
                                 [--entrypoint PROG] IMAGE [ARG...]
    python3 scripts/run-image.py --prepare IMAGE | --remove IMAGE

The Job's securityContext (lib/opsbook/oncluster/job.py) is what is reproduced: the image's numeric USER
(or -u), a read-only root filesystem, an empty writable tmpfs at /tmp, no capabilities and
no_new_privs (allowPrivilegeEscalation: false), PID 1 in a PID namespace of its own with its own /proc
and a minimal /dev. The host's network is shared, so a service on 127.0.0.1 (the tests' SeaweedFS) is
reachable. Environment: the image's ENV, then each -e (as a container's env overrides its image's).
Volumes are bind mounts, read-only unless ``:rw``; their mount points are made in the container's
root first, as a runtime does.

buildah (vfs storage) keeps one container per image, opsbook-ro-<image id>, made on first use (or by
`--prepare`, which scripts/build-image.sh calls: vfs copies the whole image, ~20 s) and reused: nothing
can change its root, which is only ever mounted read-only. `--remove` drops it (build-image.sh does when
it replaces the image).
Needs root (mount and PID namespaces, chroot); exits with the command's status.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shlex
import subprocess
import sys
import tempfile

BUILDAH = ["buildah", "--storage-driver", "vfs"]
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
LOCK = "/run/lock/opsbook-run-image.lock"


def buildah(*args: str) -> str:
    r = subprocess.run([*BUILDAH, *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"run-image: buildah {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout.strip()


def container_name(image: str) -> str:
    return "opsbook-ro-" + buildah("inspect", "--type", "image", "--format", "{{.FromImageID}}", image)[:12]


def container(image: str) -> tuple[str, str]:
    """The image's read-only container (made on first use) and where its root is mounted."""
    name = container_name(image)
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        exists = subprocess.run([*BUILDAH, "inspect", "--type", "container", name],
                                capture_output=True).returncode == 0
        if not exists:
            buildah("from", "--pull=false", "--quiet", "--name", name, image)
        return name, buildah("mount", name)


def inner_script(mnt: str, root: str, volumes: list[tuple[str, str, bool]], tmpfs: list[str]) -> str:
    """Mounts made inside a private mount namespace: they vanish with it, nothing to undo."""
    q = shlex.quote
    lines = ["set -eu",
             f"mount --bind {q(mnt)} {q(root)}",
             f"mount -o remount,bind,ro,nosuid,nodev {q(root)}",
             f"mount -t proc -o nosuid,nodev,noexec proc {q(root + '/proc')}",
             f"mount -t tmpfs -o nosuid,noexec,mode=755,size=64k tmpfs {q(root + '/dev')}",
             f"mkdir {q(root + '/dev/shm')} {q(root + '/dev/pts')}",
             f"mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs {q(root + '/dev/shm')}"]
    for dev in DEVICES:
        lines += [f"touch {q(root + '/dev/' + dev)}", f"mount --bind /dev/{dev} {q(root + '/dev/' + dev)}"]
    for link, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx")):
        lines.append(f"ln -s {q(target)} {q(root + '/dev/' + link)}")
    for name in ("/etc/hosts", "/etc/resolv.conf"):  # as a kubelet does
        if os.path.isfile(name) and os.path.isfile(mnt + name) and not os.path.islink(mnt + name):
            lines += [f"mount --bind {name} {q(root + name)}", f"mount -o remount,bind,ro {q(root + name)}"]
    for path in tmpfs:
        lines.append(f"mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs {q(root + path)}")
    for host, path, writable in volumes:
        lines.append(f"mount --bind {q(host)} {q(root + path)}")
        if not writable:
            lines.append(f"mount -o remount,bind,ro,nosuid,nodev {q(root + path)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="run-image", description=__doc__.split("\n\n")[0])
    ap.add_argument("-u", "--user", help="UID:GID (default: the image's USER, which must be numeric)")
    ap.add_argument("-e", "--env", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("-v", "--volume", action="append", default=[], metavar="HOST:PATH[:rw]")
    ap.add_argument("--tmpfs", action="append", default=[], metavar="PATH",
                    help="a writable empty tmpfs (default: /tmp only)")
    ap.add_argument("--entrypoint", help="replaces the image's ENTRYPOINT (its CMD is then not used)")
    ap.add_argument("--prepare", action="store_true", help="make the image's read-only container and exit")
    ap.add_argument("--remove", action="store_true", help="remove the image's read-only container and exit")
    ap.add_argument("image")
    ap.add_argument("args", nargs=argparse.REMAINDER)
    opts = ap.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("run-image: needs root (mount and PID namespaces, chroot)")
    if opts.remove:
        name = container_name(opts.image)
        subprocess.run([*BUILDAH, "rm", name], capture_output=True)
        return 0
    if opts.prepare:
        container(opts.image)
        return 0

    config = json.loads(buildah("inspect", "--type", "image", opts.image))["OCIv1"]["config"]
    user = opts.user or config.get("User") or "0:0"
    uid, _, gid = user.partition(":")
    if not uid.isdigit() or not (gid or uid).isdigit():
        sys.exit(f"run-image: user {user!r}: expected a numeric UID[:GID] (as runAsUser)")
    env = dict(e.split("=", 1) for e in config.get("Env") or [])
    for item in opts.env:
        name, sep, value = item.partition("=")
        if not sep:
            sys.exit(f"run-image: -e {item!r}: expected NAME=VALUE")
        env[name] = value
    command = ([opts.entrypoint] if opts.entrypoint else list(config.get("Entrypoint") or []))
    command += opts.args or ([] if opts.entrypoint else list(config.get("Cmd") or []))
    if not command:
        sys.exit("run-image: nothing to run: the image has no ENTRYPOINT or CMD and none was given")
    volumes = []
    for spec in opts.volume:
        host, _, rest = spec.partition(":")
        path, _, mode = rest.partition(":")
        if not host or not path.startswith("/") or mode not in ("", "ro", "rw"):
            sys.exit(f"run-image: -v {spec!r}: expected HOST:/PATH[:ro|rw]")
        volumes.append((os.path.abspath(host), path.rstrip("/") or "/", mode == "rw"))

    _, mnt = container(opts.image)
    for _, path, _ in volumes:  # mount points, made as a runtime makes them
        target = mnt + path
        if not os.path.lexists(target):
            os.makedirs(target, exist_ok=True)
    tmpfs = opts.tmpfs or ["/tmp"]
    with tempfile.TemporaryDirectory(prefix="opsbook-run-image-") as root:
        inner = inner_script(mnt, root, volumes, tmpfs)
        drop = ["/usr/bin/setpriv", f"--reuid={uid}", f"--regid={gid or uid}", "--clear-groups", "--no-new-privs",
                "--inh-caps=-all", "--bounding-set=-all", "--"]
        run = ["/usr/bin/env", "-i", "-C", config.get("WorkingDir") or "/", *(f"{k}={v}" for k, v in env.items()), *command]
        inner += "exec chroot " + shlex.join([root, *drop, *run]) + "\n"
        return subprocess.run(["unshare", "--mount", "--pid", "--fork", "--propagation", "private", "--kill-child",
                               "sh", "-c", inner]).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
