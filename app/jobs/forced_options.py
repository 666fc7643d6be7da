"""The options a forced measurement takes beyond its positions, the same for the synchronous
request (``POST /v1/forced``) and the forced job: random blank-sky positions and matching."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.engine.config import (
    APERTURE_PLUGIN,
    FORCED_APERTURE_RADII,
    FORCED_DEFAULT_PLUGINS,
    FORCED_PLUGINS,
    ApertureRadii,
    ForcedConfig,
)
from app.engine.forced_request import MATCH_COLUMNS, POSITION_KIND, RandomSpec
from app.io.positions import measurement_names


class OptionsError(ValueError):
    """Plugins and their settings that cannot run together; the message says what to change."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def forced_config(plugins: Sequence[str] | None, radii: list[float] | None) -> ForcedConfig:
    """The engine's config for a request's plugins (default LSST's four) and aperture radii
    (default the engine's); `OptionsError` naming unknown plugins, or radii without the
    plugin that uses them."""
    plugins = list(dict.fromkeys(FORCED_DEFAULT_PLUGINS if plugins is None else plugins))
    unknown = [p for p in plugins if p not in FORCED_PLUGINS]
    if unknown:
        raise OptionsError(f"unknown forced plugin(s) {', '.join(map(repr, unknown))}; choose "
                           f"from {', '.join(FORCED_PLUGINS)}", code="unknown_plugin")
    if radii is None:
        return ForcedConfig(plugins=plugins)
    if APERTURE_PLUGIN not in plugins:
        raise OptionsError(f"apertureRadii are the radii of {APERTURE_PLUGIN}: add it to plugins, "
                           "or leave apertureRadii out", code="radii_without_apertures")
    return ForcedConfig(plugins=plugins, apertureRadii=radii)


class RandomPositions(BaseModel):
    """Blank-sky positions: ``n`` of them, at least ``min_distance_px`` from detections."""

    model_config = ConfigDict(extra="forbid")
    n: int = Field(ge=1, le=1_000_000, description="How many positions.")
    min_distance_px: float = Field(40.0, ge=0, description="Distance from any detected pixel.")
    seed: int = Field(0, ge=0, description="Seed of the generator: same seed, same positions.")

    def to_spec(self) -> RandomSpec:
        return RandomSpec(n=self.n, min_distance_px=self.min_distance_px, seed=self.seed)


class ForcedOptions(BaseModel):
    """Which detect job's calexp to measure on, random positions to add, matching."""

    model_config = ConfigDict(extra="forbid")
    job_id: str | None = Field(
        None, description="Detect job whose calexp (PSF, DETECTED mask) to use; default newest.")
    random: RandomPositions | None = Field(
        None, description="Add random blank-sky positions, tagged position_kind = random.")
    match: bool = Field(False, description="Add the nearest detected object's id and PSF flux.")
    match_radius_px: float | None = Field(
        None, gt=0, description="Match radius in pixels; default 2 × the PSF FWHM.")
    apertureRadii: ApertureRadii | None = Field(
        None, description=f"{APERTURE_PLUGIN} radii in pixels (with that plugin; LSST's name "
                          "for the setting, as the detect config's); default "
                          f"{', '.join(f'{r:g}' for r in FORCED_APERTURE_RADII)}. Columns are "
                          f"named by radius to 0.1 px: 4.5 → {APERTURE_PLUGIN}_4_5_instFlux.")

    @model_validator(mode="after")
    def _radius_needs_match(self) -> ForcedOptions:
        if self.match_radius_px is not None and not self.match:
            raise ValueError("match_radius_px needs match = true")
        return self


@cache
def reserved_names() -> frozenset[str]:
    """Names the output adds, which a client's tag column may not take."""
    return measurement_names() | {*MATCH_COLUMNS, POSITION_KIND}
