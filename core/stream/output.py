"""Where a streaming merge writes: OUT_DIR checks, side files, and the final rename.

Rules (each refused with a message before anything is written or removed):

* OUT_DIR must not be, contain, or lie inside an input model (folder or file), one of its
  shard files, or the config file. Paths are compared after resolving links, so a link to a
  model folder is that folder.
* ``--overwrite`` replaces only a previous merge output: a folder holding a recipe
  (``merge_recipe.json``, or mergekit's ``mergekit_config.yml``) beside safetensors weights or
  their index, and no sub-folders (a merge never writes one). An empty folder may be replaced
  too. Anything else is someone's data.
* Side files (config, tokenizer) are copied only when they are regular files inside the
  source model folder (:func:`core.io.file_in_folder`): links out of it, folders, FIFOs and
  devices are skipped and named in a warning.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ..io import file_in_folder
from .st_io import DiskFullError, StreamError

INDEX_NAME = "model.safetensors.index.json"
RECIPE_FILES = ("merge_recipe.json", "mergekit_config.yml")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".msgpack", ".h5")


def check_out_dir(out: Path, protected: Sequence[tuple[str, Path]]) -> None:
    """Refuse an ``out`` that is, contains or lies inside one of the ``protected`` paths.

    Args:
        out: the resolved output folder.
        protected: ``(what, path)`` pairs, e.g. ``("input model 'ft-a'", Path(...))``.

    Raises:
        StreamError: naming the output folder and the input it overlaps.
    """
    for what, path in protected:
        p = Path(path).resolve()
        if out == p:
            how = "is"
        elif out.is_relative_to(p):
            how = "lies inside"
        elif p.is_relative_to(out):
            how = "contains"
        else:
            continue
        raise StreamError(
            f"output folder {out} {how} {what} {p}: writing there would replace the merge's own "
            "input. Choose an OUT_DIR outside every input model and the config "
            "(nothing was written or removed)"
        )


def check_replaceable(out: Path) -> None:
    """Refuse to let ``--overwrite`` remove ``out`` unless it is a previous merge output.

    Raises:
        StreamError: ``out`` is not a folder, not a merge output, holds sub-folders, or is
            read-only.
    """
    if not out.is_dir() or out.is_symlink():
        raise StreamError(
            f"{out} exists and is not a folder; --overwrite replaces only a previous merge "
            "output folder"
        )
    entries = list(out.iterdir())
    names = {e.name for e in entries}
    if entries:
        has_recipe = bool(names & set(RECIPE_FILES))
        has_weights = INDEX_NAME in names or any(n.endswith(".safetensors") for n in names)
        if not (has_recipe and has_weights):
            raise StreamError(
                f"--overwrite replaces only a previous merge output (a folder with "
                f"{' or '.join(RECIPE_FILES)} beside its safetensors weights); {out} is not "
                "one. Remove it yourself or choose another OUT_DIR (nothing was removed)"
            )
        folders = sorted(e.name for e in entries if e.is_dir() and not e.is_symlink())
        if folders:
            raise StreamError(
                f"{out} looks like a merge output but holds folder(s) {folders}, which a merge "
                "never writes; --overwrite would delete them. Move them out first "
                "(nothing was removed)"
            )
    for folder in (out, out.parent):
        if not os.access(folder, os.W_OK | os.X_OK):
            raise StreamError(
                f"{folder} is read-only: --overwrite cannot remove the previous output {out}"
            )


def check_output(
    out_dir: str | Path,
    protected: Sequence[tuple[str, Path]],
    shard_files: Iterable[Path],
    overwrite: bool,
) -> Path:
    """Every check on OUT_DIR before a merge reads a tensor; returns it resolved.

    Args:
        out_dir: the output folder as given.
        protected: ``(what, path)`` pairs OUT_DIR must keep clear of (:func:`check_out_dir`).
        shard_files: every safetensors file the merge reads (kept clear too).
        overwrite: whether an existing OUT_DIR may be replaced (a previous merge output only).

    Raises:
        StreamError: OUT_DIR overlaps an input, exists without ``overwrite``, or is not a
            previous merge output.
    """
    out = Path(out_dir).expanduser().resolve()
    check_out_dir(out, protected)
    check_out_dir(out, [("a shard file of an input model", f) for f in sorted(set(shard_files))])
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise StreamError(
            f"output folder {out} exists; pass overwrite=True (--overwrite) to replace it"
        )
    if out.exists() and overwrite:
        check_replaceable(out)
    return out


@contextmanager
def assembling(out: Path, needs: str = "") -> Iterator[Path]:
    """The work folder of ``out`` (:func:`make_partial`), removed if the block fails; an
    ``OSError`` becomes :class:`DiskFullError` (disk full, ``needs`` said in the message) or a
    :class:`StreamError` naming the folder."""
    partial = make_partial(out)
    try:
        yield partial
    except OSError as err:
        shutil.rmtree(partial, ignore_errors=True)
        if err.errno == errno.ENOSPC:
            raise DiskFullError(
                errno.ENOSPC,
                f"disk full while writing the merged model into {out.parent}{needs}; the "
                "partial output was removed",
            ) from None
        where = f" ({err.filename})" if err.filename else ""
        raise StreamError(
            f"cannot write the merged model into {out.parent}: {err.strerror or err}{where}; "
            "the partial output was removed"
        ) from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def make_partial(out: Path) -> Path:
    """Create the hidden work folder ``OUT.partial-<pid>-<hex>`` beside ``out``.

    Raises:
        StreamError: the parent cannot be created or written to.
    """
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StreamError(
            f"cannot write the output: creating {out.parent} failed ({err.strerror or err})"
        ) from None
    partial = out.parent / f"{out.name}.partial-{os.getpid()}-{secrets.token_hex(3)}"
    try:
        partial.mkdir()
    except OSError as err:
        raise StreamError(
            f"cannot write the output into {out.parent} ({err.strerror or err}); the merge "
            f"writes {partial.name} there first, then renames it to {out.name}"
        ) from None
    return partial


def copy_side_files(src: Path, folder: Path) -> list[str]:
    """Copy ``src``'s non-weight files (config, tokenizer, ...) into ``folder``.

    Only regular files that live inside ``src`` are copied (their contents, never as links);
    dot files, weights, indexes and sub-folders are left out.

    Returns:
        The names that were not copied because they are links out of ``src`` or not regular
        files.
    """
    skipped: list[str] = []
    if not src.is_dir():
        return skipped
    for entry in sorted(src.iterdir(), key=lambda e: e.name):
        name = entry.name
        if (
            name.startswith(".")
            or name.endswith(WEIGHT_SUFFIXES)
            or name.endswith(".index.json")
            or name in RECIPE_FILES
            or (entry.is_dir() and not entry.is_symlink())
        ):
            continue
        target = file_in_folder(src, name)
        if target is None or not _copy_regular(target, folder / name):
            skipped.append(name)
    return skipped


def _copy_regular(src: Path, dst: Path) -> bool:
    """Copy the bytes of ``src`` if it is (still) a regular file, without following a link
    or blocking on a FIFO that replaced it; False when it is not one."""
    try:
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as fsrc:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        with open(dst, "wb") as fdst:
            shutil.copyfileobj(fsrc, fdst)
    return True


def publish(partial: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished ``partial`` folder to ``out`` (replacing a previous merge output
    when ``overwrite``; anything else that appeared there meanwhile is left alone)."""
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise StreamError(f"output folder {out} appeared during the merge; not overwritten")
        check_replaceable(out)
        old = out.parent / f"{out.name}.old-{secrets.token_hex(3)}"
        os.replace(out, old)
        os.replace(partial, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(partial, out)
