"""Paths that may live on an object store: local files, or URIs such as gs://bucket/run.

Every workdir, checkpoint and evaluation output goes through `as_path`, an etils `epath.Path`:
local paths as on disk, `scheme://` URIs through epath's fsspec backend (gcsfs for gs://, the
`[gcs]` extra; imported only when such a path is opened). Object stores differ from a disk in ways
the callers handle: no append (`rewrite` instead), no exclusive create (training/workdir_lock.py),
no empty folders (a rename needs an existing parent), and no atomic folder rename.
"""

import os

import fsspec
from etils import epath


def is_uri(path: str | os.PathLike) -> bool:
    """True for `scheme://...` paths (gs://, s3://), which are not local files."""
    return "://" in os.fspath(path)


def as_path(path: str | os.PathLike) -> epath.Path:
    """`path` as an epath.Path: a local path made absolute (Orbax needs that), a URI left as it is
    (pathlib and epath's own `absolute()` would make gs://b/run the local folder ./gs:/b/run).
    Raises ValueError in one line for a URI whose scheme no installed filesystem opens."""
    path = os.fspath(path)
    if not is_uri(path):
        return epath.Path(os.path.abspath(path))
    try:
        fsspec.get_filesystem_class(path.split("://")[0])
    except ImportError as error:  # fsspec names the package to install (gcsfs for gs://)
        raise ValueError(f"{path}: {error} (for gs://: pip install 'maskrcnn-jax[gcs]')") from None
    except ValueError as error:  # "Protocol not known: ..."
        raise ValueError(f"{path}: no filesystem opens this scheme ({error})") from None
    return epath.Path(path)


def move(source: epath.Path, destination: epath.Path) -> None:
    """Renames the file or folder `source` to `destination`. On an object store a folder is a
    prefix: its objects are copied and deleted one by one (not atomic), and the destination's parent
    need not exist (an empty "folder" there holds no object, so epath's rename would refuse it)."""
    if not is_uri(source):
        os.rename(source, destination)
        return
    filesystem, source_path = fsspec.core.url_to_fs(os.fspath(source))
    filesystem.mv(source_path, fsspec.core.url_to_fs(os.fspath(destination))[1], recursive=True)


def rewrite(path: epath.Path, text: str) -> None:
    """Replaces the content of `path` with `text`: through a sibling file and a rename on a local
    disk (a reader never sees half a file), in one write on an object store (an object is replaced
    whole, and a rename there is a copy)."""
    if is_uri(path):
        path.write_text(text)
        return
    replacement = path.with_name(path.name + ".tmp")
    try:
        replacement.write_text(text)
        os.replace(replacement, path)
    finally:
        replacement.unlink(missing_ok=True)  # left over only when the writing failed
