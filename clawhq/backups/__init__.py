"""Workspace backups: sealed (AES-256-GCM under a per-backup key the key ring seals),
streamed, checksummed, kept in a :class:`~clawhq.backups.stores.BackupStore`.

- :mod:`.sealing`: the format, its streaming writer and reader, resealing after rotation;
- :mod:`.archive`: tar.gz streams (the plaintext);
- :mod:`.uploads`: users' uploaded archives, checked and normalised while they stream;
- :mod:`.stores` and :mod:`.s3`: a local directory or an S3-compatible bucket;
- :mod:`.operations`: store, import, download and reseal, end to end.

docs/backups.md describes the format and its threat model.
"""

from clawhq.backups.operations import (
    BackupRecord,
    Download,
    import_upload,
    reseal_backup,
    store_backup,
)
from clawhq.backups.stores import BackupStore, LocalStore, store_from_settings
from clawhq.backups.uploads import UploadLimits

__all__ = [
    "BackupRecord",
    "BackupStore",
    "Download",
    "LocalStore",
    "UploadLimits",
    "import_upload",
    "reseal_backup",
    "store_backup",
    "store_from_settings",
]
