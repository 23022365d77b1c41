"""The object server's upload area: `<root>/.tq-uploads/<owner>/`, where uploads in progress live.

One owned temp folder per server (tqengine/objects/owned.py, the same kind the local store writes its
outputs through): flock-held for the server's life; at start the folders of servers that are gone are
emptied and removed, so a crash leaves no partial upload behind, and those of live servers on the same root
are left alone. Everything is reached by descriptor from the confined root, so a link in the area is never
followed. The area is not reachable by any key: a bucket cannot start with `.`.
"""
import errno

from tqengine.errors import UnsafeObject
from tqengine.objects.confined import ConfinedRoot
from tqengine.objects.owned import OwnedTempFolder

UPLOADS = ".tq-uploads"    # the upload area under the root (not a valid bucket name)


def open_upload_area(confined: ConfinedRoot) -> tuple[OwnedTempFolder, int]:
    """This server's upload folder, made and locked, and how many partial uploads of servers that are gone
    were removed. OSError (ELOOP) when the area is a symbolic link."""
    uploads = OwnedTempFolder(confined, UPLOADS, single_owner=True)     # without flock: one server per root
    try:
        removed = uploads.remove_stale()
        uploads.folder()
    except UnsafeObject:
        uploads.close()
        raise OSError(errno.ELOOP, f"{confined.path_of([UPLOADS])} is a symbolic link") from None
    return uploads, removed
