"""Which flags a job's rows can be filtered by: those stored with them."""

from __future__ import annotations

from app.db.models import JobRecord
from app.services.results import stored_flags

COLUMNS = [{"name": "id", "datatype": "<i8"},
           {"name": "base_PixelFlags_flag_edge", "datatype": "|b1"},
           {"name": "deblend_skipped", "datatype": "|b1"},
           {"name": "base_PsfFlux_flag_count", "datatype": "<i8"}]


def test_a_detect_job_lists_its_flags_and_an_older_one_its_flag_columns():
    listed = JobRecord(kind="detect", summary={
        "columns": COLUMNS, "flags": ["base_PixelFlags_flag_edge", "deblend_skipped"]})
    assert stored_flags(listed) == ["base_PixelFlags_flag_edge", "deblend_skipped"]
    # stored before summaries listed flags: only the …_flag… booleans were stored
    older = JobRecord(kind="detect", summary={"columns": COLUMNS})
    assert stored_flags(older) == ["base_PixelFlags_flag_edge"]
    assert stored_flags(JobRecord(kind="forced", summary={"flags": ["a_flag"]})) == ["a_flag"]
