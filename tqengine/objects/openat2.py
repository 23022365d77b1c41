"""openat2(2) with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS, through ctypes.

`openat2_beneath(dir_fd, relative_path, flags, mode=0)` opens a name under `dir_fd` in one system call, the
kernel refusing a symbolic link anywhere on the way (ELOOP) and any way out of the folder (EXDEV); OSError
as os.open raises it. None where the kernel or platform has no openat2 (not Linux, Linux before 5.6,
seccomp filters that deny it): callers then walk the name one component at a time (objects/confined.py).
"""
from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable

_SYS_OPENAT2 = 437                  # the same number on every Linux architecture (a post-2019 syscall)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _make() -> Callable[[int, str, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        syscall = libc.syscall
    except (OSError, AttributeError):
        return None
    syscall.restype = ctypes.c_long
    resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS

    def openat2_beneath(dir_fd: int, path: str, flags: int, mode: int = 0) -> int:
        how = _OpenHow(flags, mode, resolve)
        fd = syscall(_SYS_OPENAT2, ctypes.c_int(dir_fd), os.fsencode(path), ctypes.byref(how),
                     ctypes.c_size_t(ctypes.sizeof(how)))
        if fd < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), path)
        return int(fd)

    root = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    try:                            # does this kernel have it (and let us call it)?
        os.close(openat2_beneath(root, ".", os.O_RDONLY | os.O_DIRECTORY, 0))
    except OSError:                 # ENOSYS (old kernel), EPERM (seccomp), EINVAL/E2BIG (old struct): walk
        return None
    finally:
        os.close(root)
    return openat2_beneath


openat2_beneath = _make()
