#!/usr/bin/env python3
"""Holders of BPF maps, set up on the host from outside the exporter's container.

    container_scenario.py STATE_JSON

Creates one BPF array map per case, named ct<pid mod 100000>_<short case>, so the
maps of two runs never collide:

  pin_sys    pinned under /sys/fs/bpf (the DaemonSet's bpffs mount), no fd
  pin_host2  pinned on a second bpffs mounted on the host (in this process's
             mount namespace, not under /sys/fs/bpf) at HOST2_MOUNT, no fd
  pin_ns     pinned on a bpffs mounted in a private mount namespace of a child
             process (unshare -m), visible to no other namespace, no fd
  file       its fd held open by this process (a plain file holder)
  inflight   its only reference is an fd in an SCM_RIGHTS message on a unix
             socket pair of this process that nobody receives
  uring      its only reference is an io_uring fixed file (registered, then
             the fd closed); the ring's fd stays in this process's table
  uring_hidden  the same, in a ring whose fd is then moved into this
             thread's registered-ring table (IORING_REGISTER_RING_FDS) and
             closed: a reference no fd table, pin, program or ring fd shows

Writes STATE_JSON ({"maps": {case: {"name", "id"}}, "pids": {...}}) when
everything is in place, then waits until stdin closes or SIGTERM, and removes
every pin, mount and process it made.
"""
import ctypes
import json
import os
import signal
import socket
import sys

# Per-run paths, so concurrent runs do not collide.
HOST2_MOUNT = f"/run/bpfmap-test-bpffs-{os.getpid()}"
NS_MOUNT = f"/run/bpfmap-test-nsbpffs-{os.getpid()}"
SYS_DIR = f"/sys/fs/bpf/bpfmap-ct-{os.getpid()}"

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR_BPF, NR_IO_URING_SETUP, NR_IO_URING_REGISTER = 321, 425, 427
BPF_MAP_CREATE, BPF_OBJ_PIN, BPF_OBJ_GET_INFO_BY_FD = 0, 6, 15
BPF_MAP_TYPE_ARRAY = 2
IORING_REGISTER_FILES = 2
IORING_REGISTER_RING_FDS = 20


class RsrcUpdate(ctypes.Structure):
    """struct io_uring_rsrc_update"""
    _fields_ = [("offset", ctypes.c_uint32), ("resv", ctypes.c_uint32), ("data", ctypes.c_uint64)]
CLONE_NEWNS = 0x00020000
MS_REC, MS_PRIVATE = 0x4000, 1 << 18


def check(ret, what):
    if ret < 0:
        e = ctypes.get_errno()
        sys.exit(f"scenario: {what}: {os.strerror(e)} (errno {e})")
    return ret


def bpf(cmd, attr):
    return check(libc.syscall(NR_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr)), f"bpf cmd {cmd}")


def map_create(name):
    attr = (ctypes.c_uint8 * 128)()
    ctypes.memmove(ctypes.addressof(attr), (ctypes.c_uint32 * 4)(BPF_MAP_TYPE_ARRAY, 4, 8, 4), 16)
    ctypes.memmove(ctypes.addressof(attr) + 28, name.encode()[:15], len(name.encode()[:15]))
    return bpf(BPF_MAP_CREATE, attr)


def map_id(fd):
    info = (ctypes.c_uint8 * 128)()
    attr = (ctypes.c_uint8 * 16)()
    ctypes.c_uint32.from_buffer(attr, 0).value = fd
    ctypes.c_uint32.from_buffer(attr, 4).value = ctypes.sizeof(info)
    ctypes.c_uint64.from_buffer(attr, 8).value = ctypes.addressof(info)
    bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    return ctypes.c_uint32.from_buffer(info, 4).value


def pin(fd, path):
    p = ctypes.create_string_buffer(path.encode())
    attr = (ctypes.c_uint8 * 16)()
    ctypes.c_uint64.from_buffer(attr, 0).value = ctypes.addressof(p)
    ctypes.c_uint32.from_buffer(attr, 8).value = fd
    bpf(BPF_OBJ_PIN, attr)


def mount_bpffs(target):
    os.makedirs(target, exist_ok=True)
    check(libc.mount(b"bpf", target.encode(), b"bpf", 0, None), f"mount bpffs on {target}")


def is_mounted(target):
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def ns_child(name, ready_w, done_r):
    """Child: own mount namespace with its own bpffs; holds it until done_r closes."""
    try:
        check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / rprivate")
        mount_bpffs(NS_MOUNT)
        fd = map_create(name)
        mid = map_id(fd)
        pin(fd, f"{NS_MOUNT}/{name}")
        os.close(fd)
        os.write(ready_w, json.dumps({"id": mid}).encode())
        os.close(ready_w)
        os.read(done_r, 1)  # EOF when the parent exits
    finally:
        os._exit(0)


def main():
    state_path = sys.argv[1]
    me = os.getpid()
    tag = f"ct{me % 100000}"
    short = {"pin_sys": "psys", "pin_host2": "phost2", "pin_ns": "pns",
             "file": "file", "inflight": "inflt", "uring": "uring", "uring_hidden": "urhid"}
    names = {c: f"{tag}_{s}" for c, s in short.items()}  # at most 15 bytes
    maps, cleanup = {}, []

    def done(*_):
        for f in reversed(cleanup):
            try:
                f()
            except OSError:
                pass
        sys.exit(0)

    signal.signal(signal.SIGTERM, done)
    signal.signal(signal.SIGINT, done)
    try:
        # pin_sys
        sys_dir = SYS_DIR
        os.makedirs(sys_dir, exist_ok=True)
        cleanup.append(lambda: os.rmdir(sys_dir))
        fd = map_create(names["pin_sys"])
        maps["pin_sys"] = map_id(fd)
        pin(fd, f"{sys_dir}/{names['pin_sys']}")
        cleanup.append(lambda: os.unlink(f"{sys_dir}/{names['pin_sys']}"))
        os.close(fd)

        # pin_host2
        if is_mounted(HOST2_MOUNT):
            sys.exit(f"scenario: {HOST2_MOUNT} is already mounted; umount it first")
        mount_bpffs(HOST2_MOUNT)
        cleanup.append(lambda: os.rmdir(HOST2_MOUNT))
        cleanup.append(lambda: libc.umount2(HOST2_MOUNT.encode(), 2))  # MNT_DETACH
        fd = map_create(names["pin_host2"])
        maps["pin_host2"] = map_id(fd)
        pin(fd, f"{HOST2_MOUNT}/{names['pin_host2']}")
        cleanup.append(lambda: os.unlink(f"{HOST2_MOUNT}/{names['pin_host2']}"))
        os.close(fd)

        # pin_ns: a child in its own mount namespace.
        os.makedirs(NS_MOUNT, exist_ok=True)
        cleanup.append(lambda: os.rmdir(NS_MOUNT))
        ready_r, ready_w = os.pipe()
        done_r, done_w = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(ready_r)
            os.close(done_w)
            ns_child(names["pin_ns"], ready_w, done_r)
        os.close(ready_w)
        os.close(done_r)
        cleanup.append(lambda: os.waitpid(child, 0))
        cleanup.append(lambda: os.close(done_w))
        msg = os.read(ready_r, 4096)
        if not msg:
            sys.exit("scenario: the mount-namespace child failed (see above)")
        maps["pin_ns"] = json.loads(msg)["id"]

        # file
        file_fd = map_create(names["file"])
        maps["file"] = map_id(file_fd)

        # inflight
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fd = map_create(names["inflight"])
        maps["inflight"] = map_id(fd)
        socket.send_fds(a, [b"m"], [fd])
        os.close(fd)

        # uring
        params = (ctypes.c_uint8 * 120)()
        ring = check(libc.syscall(NR_IO_URING_SETUP, 1, ctypes.byref(params)), "io_uring_setup")
        fd = map_create(names["uring"])
        maps["uring"] = map_id(fd)
        fds = (ctypes.c_int * 1)(fd)
        check(libc.syscall(NR_IO_URING_REGISTER, ring, IORING_REGISTER_FILES, ctypes.byref(fds), 1),
              "io_uring_register(IORING_REGISTER_FILES)")
        os.close(fd)

        # uring_hidden
        hidden = check(libc.syscall(NR_IO_URING_SETUP, 1, ctypes.byref(params)), "io_uring_setup")
        fd = map_create(names["uring_hidden"])
        maps["uring_hidden"] = map_id(fd)
        fds = (ctypes.c_int * 1)(fd)
        check(libc.syscall(NR_IO_URING_REGISTER, hidden, IORING_REGISTER_FILES, ctypes.byref(fds), 1),
              "io_uring_register(IORING_REGISTER_FILES)")
        os.close(fd)
        up = RsrcUpdate(0xFFFFFFFF, 0, hidden)  # offset -1: any free slot
        check(libc.syscall(NR_IO_URING_REGISTER, hidden, IORING_REGISTER_RING_FDS, ctypes.byref(up), 1),
              "io_uring_register(IORING_REGISTER_RING_FDS)")
        os.close(hidden)

        state = {
            "maps": {c: {"name": names[c], "id": maps[c]} for c in names},
            "pids": {"holder": me, "ns_child": child},
            "paths": {"pin_sys": sys_dir, "pin_host2": HOST2_MOUNT, "pin_ns": NS_MOUNT},
        }
        tmp = state_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.rename(tmp, state_path)
        sys.stdin.read()  # until the test closes stdin
    finally:
        done()


if __name__ == "__main__":
    main()
