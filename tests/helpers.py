"""Small registries and extracts for tests, written the way an engineer would write them."""

from __future__ import annotations

import copy
import os
import socket
import struct
import unicodedata
from pathlib import Path
from typing import Any

import yaml

from core.config import Settings
from examples.changsha.city import CITY_CODE, DIVISIONS
from ingest import run_dataset
from lakehouse.lake import Lake
from lakehouse.standardize import FULL, HALF
from schemas import load_registry

DEPARTMENTS = {"departments": [
    {"code": "amr", "name": "市场监督管理局", "name_en": "Market Regulation", "systems": [{"code": "amr_reg", "name": "登记系统"}]},
    {"code": "tax", "name": "税务局", "name_en": "Tax", "systems": [{"code": "tax_core", "name": "征管系统"}]},
]}
ELEMENTS = {
    "elements": [
        {"name": "uscc", "name_zh": "统一社会信用代码", "name_en": "USCC", "type": "string", "authority": "firms",
         "format": "uscc"},
        {"name": "enterprise_name", "name_zh": "企业名称", "name_en": "Enterprise name", "type": "string",
         "authority": "firms"},
        {"name": "enterprise_status", "name_zh": "登记状态", "name_en": "Status", "type": "string", "authority": "firms",
         "code_list": "status"},
    ],
    "code_lists": {"status": {"1": "存续", "2": "注销"}},
}
FIRMS = {
    "name": "firms", "title": "企业登记", "owner": "amr", "system": "amr_reg", "update_cycle": "daily",
    "share_type": "unconditional", "key": ["uscc"],
    "connector": {"kind": "file", "path": "amr/firms/*.csv", "format": "csv", "encoding": "utf-8"},
    "columns": [
        {"name": "uscc", "source": "统一社会信用代码", "element": "uscc", "required": True},
        {"name": "enterprise_name", "source": "企业名称", "element": "enterprise_name", "required": True},
        {"name": "enterprise_status", "source": "登记状态", "element": "enterprise_status"},
        {"name": "capital", "source": "注册资本", "type": "decimal"},
        {"name": "staff", "source": "人数", "type": "integer"},
        {"name": "founded", "source": "成立日期", "type": "date"},
    ],
}
HEADER = "统一社会信用代码,企业名称,登记状态,注册资本,人数,成立日期\n"
# Valid codes (GB 32100 check characters computed by schemas.formats).
USCC = ["91330106MA2B0C1D68", "91330105MA28A00029", "91330108MA27U0000F"]
# Demo-city divisions for tests that filter the demo's rows (a row filter must see rows): taken from the demo
# city's own list, so moving the city (Hangzhou -> Changsha, c4c58ca) moves the tests with it.
DISTRICT, OTHER_DISTRICT, THIRD_DISTRICT = sorted(DIVISIONS)[:3]
CITY_PREFIX = CITY_CODE[:4]  # every division code, and so every demo resident ID, starts with it


# The firms extract most ingestion tests drop: three rows in the shapes departments send (full-width
# digits, thousands separators, Chinese dates, a code list's label, padded text).
ROWS = [
    (USCC[0], "杭州甲科技有限公司", "1", "1,234.50", "１２", "2019-03-05"),
    (USCC[1], "杭州乙贸易有限公司", "注销", "88", "3", "2020/1/7"),
    (USCC[2], "  杭州丙建设有限公司 ", "存续", "1000000.00", "1,024", "2021年12月31日"),
]

def csv_text(data: list[tuple[str, ...]] = ROWS) -> str:
    return HEADER + "".join(",".join(f'"{v}"' for v in r) + "\n" for r in data)


def dump(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def firms_dataset(**changes: Any) -> dict:
    ds = copy.deepcopy(FIRMS)
    ds.update(changes)
    return ds


def write_registry(root: Path, datasets: list[dict] | None = None, elements: dict | None = None,
                   departments: dict | None = None) -> Path:
    dump(root / "departments.yaml", departments or DEPARTMENTS)
    dump(root / "elements.yaml", elements or ELEMENTS)
    for ds in datasets or [firms_dataset()]:
        dump(root / "datasets" / ds["owner"] / f"{ds['name']}.yaml", ds)
    return root


def drop(settings: Settings, relpath: str, text: str | bytes, encoding: str = "utf-8") -> Path:
    """A department drops a file into its source folder."""
    path = settings.sources_dir / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding=encoding)
    return path


def load(settings: Settings, name: str = "firms", environ: dict[str, str] | None = None):
    return run_dataset(settings, load_registry(settings.registry_dir), name, {**os.environ, **(environ or {})})


def rows(settings: Settings, sql: str) -> list[tuple]:
    with Lake(settings.lake, read_only=True) as lake:
        return lake.con.execute(sql).fetchall()


def shared_count(settings: Settings, table: str) -> int | None:
    with Lake(settings.lake, read_only=True) as lake:
        if table not in lake.tables("shared"):
            return None
        return lake.con.execute(f'SELECT count(*) FROM shared."{table}"').fetchone()[0]


def demo_home(home: Path, loads: tuple[str, ...], users: bool = False) -> tuple[Settings, object]:
    """A small demo city (5% scale, no hotline API) with ``loads`` published in order, and with
    ``users`` its analysts and owners (demo-credentials.json, demo-owner-credentials.json)."""
    from examples.changsha.data import DemoConfig
    from examples.changsha.generate import generate_city
    from examples.changsha.runner import _demo_users

    settings = Settings(home=home)
    generate_city(settings, DemoConfig(scale=0.05, api_url="http://127.0.0.1:9/none"))
    registry = load_registry(settings.registry_dir)
    for name in loads:
        [result] = run_dataset(settings, registry, name, os.environ)
        assert result.status == "published", result.message
    if users:
        _demo_users(settings, registry)
    return settings, registry


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc=None, seconds: float = 120) -> None:
    """Block until something listens on 127.0.0.1:``port``; fail with the process's output if not."""
    import socket
    import time

    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.3)
    if proc is not None:
        proc.kill()
    import pytest

    pytest.fail(f"nothing listens on port {port}: " + (proc.stdout.read() if proc and proc.stdout else ""))


class WireClient:
    """A hand-written Postgres-wire client: the protocol messages (and the mistakes) real clients will not send."""

    def __init__(self, port: int, timeout: float = 10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)

    def startup(self, user: str = "tax_analyst") -> None:
        params = b"user\0" + user.encode() + b"\0database\0onesource\0\0"
        self.sock.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)

    def exact(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("closed")
            out += chunk
        return out

    def read(self) -> tuple[bytes, bytes]:
        head = self.exact(5)
        return head[:1], self.exact(struct.unpack("!i", head[1:])[0] - 4)

    def send(self, kind: bytes, body: bytes) -> None:
        self.sock.sendall(kind + struct.pack("!i", len(body) + 4) + body)


# The text clean-up's oracle (lakehouse.standardize.clean_text), for the tests of its rules and of its gates.

BLANK_CATEGORIES = ("Zs", "Zl", "Zp", "Cc", "Cf")
NAMED_BLANKS = ["\t", "\n", "\r", "\x0b", "\x0c", "\x00", "\x1f", "\x7f", "\x85", "\u00a0", "\u2003", "\u3000",
                "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u2028", "\u2029", "\u00ad", "\u180e", " "]


def blank(ch: str) -> bool:
    return unicodedata.category(ch) in BLANK_CATEGORIES


def oracle_clean(value: str) -> str | None:
    """What standardize's clean-up means: full-width letters, digits and U+3000 half-width, every blank
    off both ends, nothing left is NULL."""
    value = value.translate(str.maketrans(FULL, HALF))
    start, end = 0, len(value)
    while start < end and blank(value[start]):
        start += 1
    while end > start and blank(value[end - 1]):
        end -= 1
    return value[start:end] or None


def uscc_codes(n: int) -> list[str]:
    """``n`` valid, distinct USCCs of Changsha's Furong district, whose text order is their number's."""
    from schemas.formats import org_code_check_char, uscc_check_char

    codes = []
    for i in range(n):
        org = f"{i:08d}"
        body = "91430102" + org + org_code_check_char(org)
        codes.append(body + uscc_check_char(body))
    return codes
