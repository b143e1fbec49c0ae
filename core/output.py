"""How the CLI's list commands print: ``--json`` for programs, tables for people, and never a value cut short.

``print_json`` writes one stable JSON array of objects (every field, keys in the record's own order, times
in ISO 8601, full IDs), the same shape for every ``... list --json``. ``print_table`` prints a rich table
whose cells wrap or fold but are never cropped with an ellipsis; when even that cannot fit the terminal it
prints one block per row instead (psql's expanded display), since a folded ID cannot be copied into
``revoke``. ``percent`` shows a figure beside its target without rounding it across the target.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import json
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text


def record(obj: Any) -> dict[str, Any]:
    """A dataclass instance or a mapping as a plain dict, fields in their declared order."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    return dict(obj)


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)  # exact: a float would change its digits
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    return str(value)


def json_array(records: Iterable[Any]) -> str:
    """``records`` (dataclasses or mappings) as a JSON array of objects, UTF-8 text kept as it is."""
    return json.dumps([record(r) for r in records], ensure_ascii=False, indent=2, default=_plain)


def print_json(records: Iterable[Any], file: TextIO | None = None) -> None:
    print(json_array(records), file=file or sys.stdout)


def cell(value: Any) -> str:
    """A value as a table shows it: NULL as empty, lists comma-separated, times to the second."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    return str(value)


def print_table(console: Console, columns: Sequence[str], rows: Iterable[Sequence[str]], title: str | None = None,
                right: Iterable[str] = (), whole: Iterable[str] = (), markup: bool = False) -> None:
    """Every cell whole: a table whose long cells wrap (at spaces, else folded) and whose ``whole`` columns
    (IDs to copy, row filters to read) stay on one line; or, when that cannot fit the terminal, one
    ``column | value`` block per row.

    Cells are plain text unless ``markup`` (then the caller escapes what it did not write)."""
    from rich.cells import cell_len
    from rich.table import Table
    from rich.text import Text

    right, whole = set(right), set(whole)

    def text(value: str) -> Text:
        return Text.from_markup(value) if markup else Text(value)

    cells = [[text(v) for v in r] for r in rows]
    needs = [_need(col, [r[i] for r in cells], col in whole) for i, col in enumerate(columns)]
    width = console.width
    room = width - 3 * len(columns) - 1  # each cell padded by one space a side, one rule between
    if sum(needs) <= room:
        table = Table(title=title, title_justify="left")
        # widths chosen here: rich's own narrowing ignores a column's minimum and then crops the row
        widths = _widths(needs, [max([cell_len(col), *(r[i].cell_len for r in cells)]) for i, col in enumerate(columns)],
                         room)
        for col, w in zip(columns, widths, strict=True):
            table.add_column(col, overflow="fold", justify="right" if col in right else "left", no_wrap=col in whole,
                             width=w)
        for r in cells:
            table.add_row(*r)
        console.print(table)
        return
    if title:
        console.print(title, highlight=False, markup=False)
    label = max(len(c) for c in columns)
    for n, r in enumerate(cells, 1):
        console.print(f"-[ {n} ]" + "-" * max(0, min(width, 40) - 6 - len(str(n))), highlight=False, markup=False)
        for col, v in zip(columns, r, strict=True):
            line = Text(f"{col:<{label}} | ")
            line.append_text(v)
            console.print(line, highlight=False, soft_wrap=True, crop=False)


FOLD_AT = 16
"""A word longer than this may be folded inside a wrapped cell (a long name, a Chinese phrase)."""


def _need(header: str, cells: list[Text], whole: bool) -> int:
    """The narrowest a column may be: its header's longest word, and each cell whole (``whole``) or its
    longest word up to :data:`FOLD_AT`."""
    from rich.cells import cell_len

    head = max(cell_len(w) for w in header.split() or [""])
    if whole:
        return max([head, *(t.cell_len for t in cells)])
    # Chinese text breaks between any two characters (no spaces to wait for): two characters are enough
    words = (min(cell_len(w), 4 if cell_len(w) != len(w) else FOLD_AT) for t in cells for w in t.plain.split())
    return max(head, max(words, default=0))


def _widths(needs: list[int], natural: list[int], room: int) -> list[int]:
    """Column widths within ``room``: each its natural width if all fit, else its need plus a share of what
    is left, the widest wants first served least (water-filling)."""
    widths = [max(n, w) for n, w in zip(needs, natural, strict=True)]
    if sum(widths) <= room:
        return widths
    widths = list(needs)
    spare = room - sum(widths)
    while spare > 0:
        wanting = [i for i, w in enumerate(widths) if w < max(needs[i], natural[i])]
        if not wanting:
            break
        share = max(1, spare // len(wanting))
        for i in wanting:
            grow = min(share, natural[i] - widths[i], spare)
            widths[i] += grow
            spare -= grow
            if not spare:
                break
    return widths


def percent(value: float | None, target: float | None = None, lower_is_better: bool = False, digits: int = 1) -> str:
    """``value`` (a fraction) as a percentage with ``digits`` decimals that sits on the same side of
    ``target`` as the value itself: 0.9995 against a 100% target shows "99.9%", never "100.0%", and 0.10004
    against a ceiling of 10% shows "10.1%". Away from a target it is rounded as usual (half to even)."""
    if value is None:
        return "-"
    unit = decimal.Decimal(1).scaleb(-digits)
    exact = decimal.Decimal(str(value)) * 100  # str: the shortest decimal that is this float (or the Decimal itself)
    shown = exact.quantize(unit, rounding=decimal.ROUND_HALF_EVEN)
    if target is not None:
        goal = decimal.Decimal(str(target)) * 100
        meets = exact <= goal if lower_is_better else exact >= goal
        looks = shown <= goal if lower_is_better else shown >= goal
        if looks != meets:  # one unit back across the target: the rounding moved it at most half a unit
            shown += unit if (lower_is_better != meets) else -unit
    return f"{shown:.{digits}f}%"


def target_text(target: float | None, lower_is_better: bool = False) -> str:
    """A target as it is, to the digit: ">= 90%", "<= 10%", ">= 92.5%"."""
    if target is None:
        return "-"
    exact = (decimal.Decimal(str(target)) * 100).normalize()
    return f"{'<=' if lower_is_better else '>='} {exact:f}%"


def records_of(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """Rows of a query as records, keyed by its column names."""
    return [dict(zip(columns, r, strict=True)) for r in rows]


__all__ = ["cell", "json_array", "percent", "print_json", "print_table", "record", "records_of", "target_text"]
