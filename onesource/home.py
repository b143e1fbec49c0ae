"""At rest: a OneSource home is its user's alone.

Everything the platform writes (the registry, landed extracts, the lake and its catalog, staged
batches, the Airflow home and its logs, GX results, reports, the demo's credentials) is under
``ONESOURCE_HOME``. The home is 0700, and every process that writes into it runs with the umask
0o077, so the folders it makes are 0700 and its files 0600, whoever wrote them: OneSource itself,
DuckDB, SQLite, Great Expectations or Airflow (all run as the same user). Each entry point calls
:func:`secure_home` once: the CLI (``onesource ...``, which also starts Airflow and the demo) and
the Airflow tasks (:mod:`onesource.tasks`, which every generated DAG's tasks call).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import ConfigurationError

if TYPE_CHECKING:
    from core.config import Settings

UMASK = 0o077
"""New folders 0700, new files 0600."""
HOME_MODE = 0o700


def private_umask() -> int:
    """Set this process's umask to :data:`UMASK` (inherited by its children); return the previous one."""
    return os.umask(UMASK)


def ensure_private_dir(path: Path) -> Path:
    """``path`` exists as a folder of this user with mode 0700: created so, or an existing one whose
    group or other bits are cleared. Refuses a folder that belongs to another user."""
    path = Path(path)
    try:
        path.mkdir(mode=HOME_MODE, parents=True, exist_ok=True)
        info = path.stat()
    except OSError as exc:
        raise ConfigurationError(f"cannot make the home {path}: {exc.strerror}; point ONESOURCE_HOME at a folder "
                                 "this user may create") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigurationError(f"{path} is not a folder; point ONESOURCE_HOME at a folder")
    if info.st_uid != os.getuid():
        raise ConfigurationError(f"{path} belongs to another user (uid {info.st_uid}); a OneSource home must be "
                                 "its platform user's own: point ONESOURCE_HOME elsewhere")
    if stat.S_IMODE(info.st_mode) != HOME_MODE:
        try:
            path.chmod(HOME_MODE)  # an older home (or one made by hand) was readable by others
        except OSError as exc:
            if exc.errno == errno.EROFS:
                raise ConfigurationError(f"the home {path} is on a read-only file system, so nothing can be written "
                                         "there: remount it read-write, or point ONESOURCE_HOME at a writable "
                                         "folder") from exc
            raise ConfigurationError(f"{path} is mode {oct(stat.S_IMODE(info.st_mode))} and cannot be made 0700 "
                                     f"({exc.strerror}); make it private by hand") from exc
    return path


def secure_home(settings: Settings) -> Path:
    """The entry points' first step: umask 0o077 for this process, and the home 0700 (made or fixed)."""
    private_umask()
    return ensure_private_dir(settings.home)
