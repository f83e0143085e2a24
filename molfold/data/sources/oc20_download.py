"""Downloading the published OC20 archives (fairchem's ``docs/core/datasets/oc20.md``).

:func:`download_oc20` fetches one archive of :data:`OC20_ARCHIVES` into a folder, checks its MD5
against the published checksum and unpacks it there (tar members may not leave the folder).
The S2EF training and validation archives hold the raw ``<n>.extxyz.xz`` + ``<n>.txt.xz``
pairs, which ``data=oc20`` reads as they are (no LMDB preprocessing needed); the IS2RE archive
holds the LMDBs of pickled ``Data`` (``data.allow_pickle=true``). Needs network access; the
tests call it on a local archive only.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

from molfold.data.sources.downloads import download
from molfold.errors import DataError

BASE_URL = "https://dl.fbaipublicfiles.com/opencatalystproject/data/"

OC20_ARCHIVES: dict[str, tuple[str, str]] = {
    "s2ef_train_200K": ("s2ef_train_200K.tar", "f8d0909c2623a393148435dede7d3a46"),
    "s2ef_train_2M": ("s2ef_train_2M.tar", "953474cb93f0b08cdc523399f03f7c36"),
    "s2ef_train_20M": ("s2ef_train_20M.tar", "863bc983245ffc0285305a1850e19cf7"),
    "s2ef_train_all": ("s2ef_train_all.tar", "12a7087bfd189a06ccbec9bc7add2bcd"),
    "s2ef_val_id": ("s2ef_val_id.tar", "f57f7f5c1302637940f2cc858e789410"),
    "s2ef_val_ood_ads": ("s2ef_val_ood_ads.tar", "431ab0d7557a4639605ba8b67793f053"),
    "s2ef_val_ood_cat": ("s2ef_val_ood_cat.tar", "532d6cd1fe541a0ddb0aa0f99962b7db"),
    "s2ef_val_ood_both": ("s2ef_val_ood_both.tar", "5731862978d80502bbf7017d68c2c729"),
    "s2ef_test_lmdbs": ("s2ef_test_lmdbs.tar.gz", "bcada432482f6e87b24e14b6b744992a"),
    "is2re": ("is2res_train_val_test_lmdbs.tar.gz", "cfc04dd2f87b4102ab2f607240d25fb1"),
}
"""Name -> (archive file, MD5) of the OC20 downloads, as fairchem's documentation lists them."""


def md5_of(path: Path, block: int = 1 << 22) -> str:
    """MD5 hex digest of the file ``path``, read in blocks."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def download_oc20(name: str, root: str | os.PathLike, base_url: str = BASE_URL) -> Path:
    """Download, verify and unpack the OC20 archive ``name`` (:data:`OC20_ARCHIVES`) in
    ``root``; returns ``root``. An archive already there with the right checksum is not
    downloaded again; one with the wrong checksum is a :class:`DataError` (delete it and retry).
    """
    if name not in OC20_ARCHIVES:
        raise DataError(f"unknown OC20 archive {name!r}; known: {', '.join(OC20_ARCHIVES)}")
    filename, checksum = OC20_ARCHIVES[name]
    root = Path(root)
    archive = root / filename
    if not archive.exists():
        download(base_url + filename, archive)
    found = md5_of(archive)
    if found != checksum:
        raise DataError(
            f"{archive}: MD5 {found} is not the published {checksum} (a truncated or changed "
            "download): delete it and download again"
        )
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")  # no member may leave root or be a device
    except (tarfile.TarError, OSError) as error:
        raise DataError(f"{archive}: cannot unpack: {error}") from None
    return root
