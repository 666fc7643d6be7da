"""Slots and aliases: afw's AliasMap for skyphot's catalogs.

An alias is a name prefix standing for another: with ``slot_PsfFlux → base_PsfFlux``,
``slot_PsfFlux_instFlux`` is the column ``base_PsfFlux_instFlux``. The slots
(``SourceSlotConfig``) are aliases; so are meas_base's ``<plugin>_flag_badCentroid`` and
``_flag_badShape``, which name the flag of the centroid or shape a plugin relied on. A
catalog carries its aliases as afw writes them to FITS: ``meta["ALIAS"]``, a list of
``"alias:target"`` strings, which FITS (one ``ALIAS`` card each), ECSV and Parquet keep as
they are; wherever a user names a column, an alias resolves to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from app.engine.config import SourceSlotConfig

SLOTS = {
    "centroid": "slot_Centroid",
    "shape": "slot_Shape",
    "psfShape": "slot_PsfShape",
    "apFlux": "slot_ApFlux",
    "modelFlux": "slot_ModelFlux",
    "psfFlux": "slot_PsfFlux",
    "gaussianFlux": "slot_GaussianFlux",
    "calibFlux": "slot_CalibFlux",
}
"""SourceSlotConfig field → slot alias."""

META_KEY = "ALIAS"
"""The key of a catalog's aliases in its metadata (afw's FITS header key)."""


def meta_entries(aliases: Mapping[str, str]) -> list[str]:
    """Aliases as afw stores them: ``"alias:target"`` each."""
    return [f"{alias}:{target}" for alias, target in aliases.items()]


def from_meta(meta: Mapping[str, object]) -> dict[str, str]:
    """The aliases of a catalog's metadata (one entry reads back from FITS as a string)."""
    entries = meta.get(META_KEY, [])
    if isinstance(entries, str):
        entries = [entries]
    out: dict[str, str] = {}
    for entry in entries if isinstance(entries, list | tuple) else []:
        alias, sep, target = str(entry).partition(":")
        if sep and alias and target:
            out[alias] = target
    return out


def slot_aliases(slots: SourceSlotConfig, measured: Iterable[str]) -> dict[str, str]:
    """The slot aliases of a run whose measurements have the name prefixes ``measured``
    (``base_PsfFlux``, ``base_CircularApertureFlux_12_0``, …).

    A slot naming a measurement the run does not make is a configuration error, as
    meas_base's ``SourceSlotConfig`` validation makes it.
    """
    made = set(measured)
    out: dict[str, str] = {}
    for field, alias in SLOTS.items():
        target = getattr(slots, field)
        if target is None:
            continue
        if target not in made:
            raise ValueError(
                f"slots.{field} names {target!r}, which this measurement does not make "
                f"(it makes {', '.join(sorted(made))}); add its plugin (or aperture radius) "
                f"or set slots.{field} to null")
        out[alias] = target
    return out


def resolve(name: str, aliases: Mapping[str, str]) -> str:
    """The field ``name`` stands for: its longest alias prefix replaced (ending at ``_`` or
    at the end of the name), repeatedly, as afw's ``AliasMap.apply``; other names as
    given."""
    seen: set[str] = set()
    while name not in seen:
        seen.add(name)
        best = max((a for a in aliases
                    if name == a or (name.startswith(a) and name[len(a)] == "_")),
                   key=len, default=None)
        if best is None:
            return name
        name = aliases[best] + name[len(best):]
    raise ValueError(f"alias {name!r} refers to itself")


def resolvable(aliases: Mapping[str, str], columns: Iterable[str]) -> dict[str, str]:
    """Every alias name that stands for one of ``columns``, e.g. ``slot_PsfFlux_instFlux``
    → ``base_PsfFlux_instFlux``, for listing and lookup."""
    out: dict[str, str] = {}
    for column in columns:
        for alias, target in aliases.items():
            if column == target or column.startswith(target + "_"):
                name = alias + column[len(target):]
                if resolve(name, aliases) == column:
                    out[name] = column
    return out
