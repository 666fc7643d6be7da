"""Request and response bodies of forced photometry and random blank-sky positions."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.services.forced import BlankSky, ForcedQuery, RandomSpec


class RandomPositions(BaseModel):
    """Blank-sky positions: ``n`` of them, at least ``min_distance_px`` from detections."""

    model_config = ConfigDict(extra="forbid")
    n: int = Field(ge=1, le=1_000_000, description="How many positions.")
    min_distance_px: float = Field(40.0, ge=0, description="Distance from any detected pixel.")
    seed: int = Field(0, ge=0, description="Seed of the generator: same seed, same positions.")

    def to_spec(self) -> RandomSpec:
        return RandomSpec(n=self.n, min_distance_px=self.min_distance_px, seed=self.seed)


class ForcedRequest(BaseModel):
    """Positions to measure on one exposure, as its detect job characterized it."""

    model_config = ConfigDict(extra="forbid")
    exposure_id: str
    job_id: str | None = Field(
        None, description="Detect job whose calexp (PSF, DETECTED mask) to use; default newest.")
    positions: list[dict[str, Any]] = Field(
        default_factory=list,
        description='[{"ra": deg, "dec": deg, …tags}] or [{"x": pix, "y": pix, …tags}]; '
                    "tags come back unchanged, in input order.",
    )
    plugins: list[str] | None = Field(
        None, description="Forced plugins (LSST names); default TransformedCentroid, PsfFlux, "
                          "TransformedShape, PixelFlags.")
    random: RandomPositions | None = Field(
        None, description="Add random blank-sky positions, tagged position_kind = random.")
    match: bool = Field(False, description="Add the nearest detected object's id and PSF flux.")
    match_radius_px: float | None = Field(
        None, gt=0, description="Match radius in pixels; default 2 × the PSF FWHM.")

    @model_validator(mode="after")
    def _radius_needs_match(self) -> ForcedRequest:
        if self.match_radius_px is not None and not self.match:
            raise ValueError("match_radius_px needs match = true")
        return self

    def to_query(self) -> ForcedQuery:
        return ForcedQuery(
            exposure_id=self.exposure_id, positions=self.positions, job_id=self.job_id,
            plugins=self.plugins, random=None if self.random is None else self.random.to_spec(),
            match=self.match, match_radius_px=self.match_radius_px)


class RandomPositionsRequest(RandomPositions):
    """Random blank-sky positions on an exposure, away from a detect job's footprints."""

    job_id: str | None = Field(
        None, description="Detect job whose footprints to avoid; default the newest.")


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
