"""Request and response bodies of forced photometry and random blank-sky positions."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, field_validator

from app.jobs.forced_options import ForcedOptions, RandomPositions
from app.services.forced import BlankSky, ForcedQuery


class ForcedRequest(ForcedOptions):
    """Positions to measure on one exposure, as its detect job characterized it."""

    exposure_id: str
    positions: list[dict[str, Any]] = Field(
        default_factory=list,
        description='[{"ra": deg, "dec": deg, …tags}] or [{"x": pix, "y": pix, …tags}]; '
                    "tags come back unchanged, in input order.",
    )
    plugins: list[str] | None = Field(
        None, description="Forced plugins (LSST names); default TransformedCentroid, PsfFlux, "
                          "TransformedShape, PixelFlags.")

    def to_query(self) -> ForcedQuery:
        return ForcedQuery(
            exposure_id=self.exposure_id, positions=self.positions, job_id=self.job_id,
            plugins=self.plugins, aperture_radii=self.apertureRadii,
            random=None if self.random is None else self.random.to_spec(),
            match=self.match, match_radius_px=self.match_radius_px)


RANDOM_POSITIONS_MAX = 100_000
"""Most positions one random-positions answer holds (10 MB of JSON); a forced job draws up
to 10⁶ and measures them."""


class RandomPositionsRequest(RandomPositions):
    """Random blank-sky positions on an exposure, away from a detect job's footprints."""

    n: int = Field(ge=1, json_schema_extra={"maximum": RANDOM_POSITIONS_MAX}, description=(
        f"How many positions, at most {RANDOM_POSITIONS_MAX}; a forced job's random option "
        "draws up to 10⁶ and measures them."))
    job_id: str | None = Field(
        None, description="Detect job whose footprints to avoid; default the newest.")

    @field_validator("n")
    @classmethod
    def _one_answer(cls, n: int) -> int:
        if n > RANDOM_POSITIONS_MAX:
            raise ValueError(f"one answer holds at most {RANDOM_POSITIONS_MAX} positions; a "
                             'forced job ({"kind": "forced", "config": {"random": …}}) draws '
                             "up to 10⁶ and measures them")
        return n


class BlankPosition(BaseModel):
    x: float = Field(description="Pixel x (parent frame).")
    y: float = Field(description="Pixel y (parent frame).")
    ra: float | None = Field(description="ICRS degrees; null without a WCS.")
    dec: float | None = Field(description="ICRS degrees; null without a WCS.")


class RandomPositionsOut(BaseModel):
    job_id: str = Field(description="The detect job whose footprints were avoided.")
    positions: list[BlankPosition]

    @classmethod
    def from_blank_sky(cls, sky: BlankSky) -> RandomPositionsOut:
        def finite(v: float) -> float | None:
            return v if v == v else None

        return cls(job_id=sky.job_id, positions=[
            BlankPosition(x=x, y=y, ra=finite(ra), dec=finite(dec))
            for x, y, ra, dec in zip(sky.x.tolist(), sky.y.tolist(), sky.ra.tolist(),
                                     sky.dec.tolist(), strict=True)])
