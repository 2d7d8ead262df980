"""Spark views of the stored feature tables."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from lhc_assets.physics.llf_format import N_LLF, encode_llf

pytestmark = pytest.mark.slow  # starts the JVM


def test_llf_as_array_shows_the_stored_particle_lists_as_float_arrays(spark, tmp_path):
    import pyarrow.parquet as pq
    from pyspark.sql import functions as F

    from lhc_assets.spark.views import llf_as_array

    rng = np.random.default_rng(1)
    counts = np.array([2, 0, 5])
    rows = rng.normal(size=(7, N_LLF)).astype(np.float32)
    table = pa.table({"entry": pa.array([10, 11, 12], pa.int64()), "n_particles": pa.array(counts, pa.int32()),
                      "llf": encode_llf(counts, rows)})
    pq.write_table(table, tmp_path / "llf.parquet")
    df = llf_as_array(spark.read.parquet(str(tmp_path)))
    assert df.schema["llf_array"].dataType.simpleString() == "array<float>"
    got = {r.entry: r for r in df.select("entry", "llf_array", F.size("llf_array").alias("n")).collect()}
    assert [got[e].n for e in (10, 11, 12)] == [2 * N_LLF, 0, 5 * N_LLF]
    np.testing.assert_array_equal(np.asarray(got[12].llf_array, np.float32), rows[2:].ravel())
    # Particle i, feature j is element i * 19 + j + 1 (SQL arrays count from 1).
    pt = df.where("entry = 10").select(F.element_at("llf_array", 1 * N_LLF + 4 + 1)).first()[0]
    assert pt == pytest.approx(float(rows[1, 4]))
    with pytest.raises(ValueError, match="no column 'particles'"):
        llf_as_array(df, column="particles")
