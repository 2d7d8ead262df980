"""Scoring the feature tables of one input file with the trained Keras models (ml/scoring.py), on hand-made
hlf_features / llf_features Parquet files like the ingestion writes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lhc_assets.ml.contract import GRU_WIDTH, N_HLF
from lhc_assets.ml.dataset_writer import FLOAT_LIST
from lhc_assets.ml.preparation import FeatureScalers
from lhc_assets.ml.scoring import FileScoreTask, feature_chunks, score_file, scores_schema
from lhc_assets.physics.llf_format import encode_llf
from lhc_assets.physics.schema import HLF_COLUMNS, LLF_COLUMNS, N_LLF

# Models saved before any training carry an unbuilt optimizer; Keras says so when loading them.
pytestmark = pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer:UserWarning")

ETA, PHI = LLF_COLUMNS.index("eta"), LLF_COLUMNS.index("phi")
ENTRIES = [7, 3, 9, 1, 5]  # hlf_features' row order; llf_features holds the same events sorted by entry


def _scalers(lo=0.0, hi=10.0, mean=1.0, std=2.0) -> FeatureScalers:
    return FeatureScalers(hlf_min=(lo,) * N_HLF, hlf_max=(hi,) * N_HLF, llf_mean=(mean,) * N_LLF,
                          llf_std=(std,) * N_LLF, train_events=1, train_particles=1)


def _hlf_values(entries) -> np.ndarray:
    """HLF column j of the event with entry e holds e + j / 10 (so row and column are recognisable)."""
    return (np.asarray(entries, np.float32)[:, None] + np.arange(N_HLF, dtype=np.float32) / 10).astype(np.float32)


def _hlf_table(entries=ENTRIES, sample="ttbar", label=1) -> pa.Table:
    n = len(entries)
    values = _hlf_values(entries)
    return pa.table({
        "sample": pa.array([sample] * n, pa.string()), "label": pa.array([label] * n, pa.int32()),
        "file": pa.array([f"{sample}_seed1_0000.root"] * n, pa.string()), "entry": pa.array(entries, pa.int64()),
        "partition_key": pa.array([f"{sample}/seed1_0000"] * n, pa.string()),
        **{c: pa.array(values[:, j], pa.float32()) for j, c in enumerate(HLF_COLUMNS)},
    })


def _particles(entry: int) -> np.ndarray:
    """Event ``entry``'s stored rows, the lepton first: one lepton, plus one particle at dR 1 for odd entries
    above 4. Every value of a row is the same number, except eta and phi."""
    lepton = np.full(N_LLF, float(entry), np.float32)
    lepton[ETA] = lepton[PHI] = 0.0
    if entry % 2 == 0 or entry < 4:
        return lepton[None, :]
    other = np.full(N_LLF, 100.0 + entry, np.float32)
    other[ETA], other[PHI] = 1.0, 0.0
    return np.stack([lepton, other])


def _llf_table(entries) -> pa.Table:
    rows = [_particles(e) for e in entries]
    counts = np.array([len(r) for r in rows], np.int64)
    values = np.concatenate(rows) if rows else np.zeros((0, N_LLF), np.float32)
    return pa.table({"entry": pa.array(entries, pa.int64()), "n_particles": pa.array(counts, pa.int32()),
                     "llf": encode_llf(counts, values)})


def _expected_gru(entry: int, mean=1.0, std=2.0) -> np.ndarray:
    """The padded GRU row by hand: zeros, then the particles by decreasing dR (the lepton last), standardised."""
    stored = _particles(entry)
    real = stored[::-1] if len(stored) == 2 else stored
    out = np.zeros(GRU_WIDTH, np.float32)
    out[GRU_WIDTH - real.size:] = ((real - mean) / std).ravel()
    return out


# ---- scores_schema --------------------------------------------------------------------------------------


def test_scores_schema_has_the_identity_the_class_index_and_one_float_list_per_model():
    schema = scores_schema(["hlf_classifier", "inclusive_classifier"])
    assert schema.names == ["sample", "file", "entry", "label", "hlf_classifier", "inclusive_classifier"]
    assert [schema.field(c).type for c in ("sample", "file", "entry", "label")] == [
        pa.string(), pa.string(), pa.int64(), pa.int32()]
    assert schema.field("hlf_classifier").type == FLOAT_LIST
    assert schema.field("inclusive_classifier").type == pa.list_(pa.field("element", pa.float32(), nullable=False))
    assert scores_schema([]).names == ["sample", "file", "entry", "label"]


# ---- feature_chunks -------------------------------------------------------------------------------------


def test_chunks_cover_the_rows_in_order_with_hlf_min_max_scaled():
    hlf = _hlf_table()
    chunks = list(feature_chunks(hlf, None, _scalers(lo=0.0, hi=10.0), "test", chunk=2))
    assert [(rows.start, rows.stop) for rows, _, _ in chunks] == [(0, 2), (2, 4), (4, 5)]
    assert all(gru is None for _, _, gru in chunks)
    scaled = np.concatenate([h for _, h, _ in chunks])
    assert scaled.dtype == np.float32 and scaled.shape == (5, N_HLF)
    # (e + j/10 - 0) / 10: event 7, column 3 -> 0.73; event 1, column 13 -> 0.23
    assert scaled[0, 3] == pytest.approx(0.73, abs=1e-6)
    assert scaled[3, 13] == pytest.approx(0.23, abs=1e-6)
    np.testing.assert_allclose(scaled, _hlf_values(ENTRIES) / 10, atol=1e-6)


def test_chunks_match_the_particle_lists_to_the_hlf_rows_by_entry():
    hlf = _hlf_table()
    llf = _llf_table(sorted(ENTRIES))  # another row order than hlf
    chunks = list(feature_chunks(hlf, llf, _scalers(mean=1.0, std=2.0), "test", chunk=3))
    assert [(rows.start, rows.stop) for rows, _, _ in chunks] == [(0, 3), (3, 5)]
    gru = np.concatenate([g for _, _, g in chunks])
    assert gru.shape == (5, GRU_WIDTH) and gru.dtype == np.float32
    for row, entry in enumerate(ENTRIES):
        np.testing.assert_allclose(gru[row], _expected_gru(entry), atol=1e-6, err_msg=f"entry {entry}")
    # Entry 7 has two particles: the other one (value 107 -> 53) comes before the lepton (7 -> 3).
    assert gru[0, -2 * N_LLF] == pytest.approx(53.0) and gru[0, -1] == pytest.approx(3.0)
    assert not gru[0, :-2 * N_LLF].any()


def test_chunks_refuse_particle_lists_of_other_events():
    hlf = _hlf_table()
    with pytest.raises(ValueError, match="partition 'x': hlf_features and llf_features hold different events "
                                         r"\(5 and 4 rows\)"):
        next(feature_chunks(hlf, _llf_table([1, 3, 5, 7]), _scalers(), "partition 'x'"))
    with pytest.raises(ValueError, match=r"\(5 and 5 rows\)"):
        next(feature_chunks(hlf, _llf_table([1, 3, 5, 7, 11]), _scalers(), "partition 'x'"))
    with pytest.raises(ValueError, match=r"\(5 and 0 rows\)"):
        next(feature_chunks(hlf, _llf_table([]), _scalers(), "partition 'x'"))


def test_chunks_of_a_file_without_selected_events_are_none():
    assert list(feature_chunks(_hlf_table([]), None, _scalers(), "test")) == []
    assert list(feature_chunks(_hlf_table([]), _llf_table([]), _scalers(), "test")) == []


# ---- score_file (imports TensorFlow) --------------------------------------------------------------------


def _save(tmp_path, name: str, **kwargs) -> str:
    from lhc_assets.ml.contract import keras_model

    path = tmp_path / f"{name}.keras"
    keras_model(name).build(seed=1, **kwargs).save(path)
    return str(path)


def _write_features(tmp_path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """hlf_features as two part files (3 + 2 events), llf_features as one file in entry order."""
    hlf = _hlf_table()
    (tmp_path / "hlf").mkdir()
    (tmp_path / "llf").mkdir()
    pq.write_table(hlf.slice(0, 3), tmp_path / "hlf" / "part-0.parquet")
    pq.write_table(hlf.slice(3), tmp_path / "hlf" / "part-1.parquet")
    pq.write_table(_llf_table(sorted(ENTRIES)), tmp_path / "llf" / "part-0.parquet")
    return ((str(tmp_path / "hlf" / "part-0.parquet"), str(tmp_path / "hlf" / "part-1.parquet")),
            (str(tmp_path / "llf" / "part-0.parquet"),))


@pytest.mark.slow
def test_score_file_writes_the_identity_and_each_models_probabilities_of_every_event(tmp_path):
    import keras

    hlf_files, llf_files = _write_features(tmp_path)
    models = (("hlf_classifier", _save(tmp_path, "hlf_classifier")),
              ("particle_sequence_classifier", _save(tmp_path, "particle_sequence_classifier", gru_units=4)))
    out = tmp_path / "scores" / "ttbar" / "part-00000.parquet"
    task = FileScoreTask("ttbar/seed1_0000", hlf_files, llf_files, models, _scalers().to_dict(), str(out))

    assert score_file(task) == {"partition_key": "ttbar/seed1_0000", "rows": 5}

    table = pq.read_table(out)
    assert table.schema == scores_schema(["hlf_classifier", "particle_sequence_classifier"])
    assert table.column("entry").to_pylist() == ENTRIES
    assert table.column("label").to_pylist() == [1] * 5
    assert table.column("sample").to_pylist() == ["ttbar"] * 5
    assert set(table.column("file").to_pylist()) == {"ttbar_seed1_0000.root"}
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary file left

    # The models on the inputs built by hand, in hlf_features' row order.
    dense = keras.saving.load_model(models[0][1])
    expected = dense.predict(_hlf_values(ENTRIES) / 10, verbose=0)
    got = np.array(table.column("hlf_classifier").to_pylist(), np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)

    gru = keras.saving.load_model(models[1][1])
    inputs = np.stack([_expected_gru(e) for e in ENTRIES]).reshape(5, -1, N_LLF)
    expected = gru.predict(inputs, verbose=0)
    got = np.array(table.column("particle_sequence_classifier").to_pylist(), np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert not np.allclose(got[0], got[1])  # the events' own particle lists, not one list for all


@pytest.mark.slow
def test_score_file_with_hlf_models_only_does_not_read_the_particle_lists(tmp_path):
    hlf_files, _ = _write_features(tmp_path)
    models = (("hlf_classifier", _save(tmp_path, "hlf_classifier")),)
    out = tmp_path / "scores.parquet"
    # The llf file does not exist: it must not be opened.
    task = FileScoreTask("ttbar/seed1_0000", hlf_files, (str(tmp_path / "missing.parquet"),), models,
                         _scalers().to_dict(), str(out))
    assert score_file(task)["rows"] == 5
    assert pq.read_table(out).column_names == ["sample", "file", "entry", "label", "hlf_classifier"]


@pytest.mark.slow
def test_score_file_without_hlf_files_is_an_error_naming_the_partition(tmp_path):
    models = (("hlf_classifier", _save(tmp_path, "hlf_classifier")),)
    task = FileScoreTask("qcd/seed2_0001", (), (), models, _scalers().to_dict(), str(tmp_path / "out.parquet"))
    with pytest.raises(ValueError, match="partition 'qcd/seed2_0001': no hlf_features files"):
        score_file(task)
    assert not (tmp_path / "out.parquet").exists()


@pytest.mark.slow
def test_score_file_of_particle_models_without_llf_files_is_an_error_naming_the_partition(tmp_path):
    pq.write_table(_hlf_table(), tmp_path / "hlf.parquet")
    models = (("inclusive_classifier", _save(tmp_path, "inclusive_classifier")),)
    task = FileScoreTask("qcd/seed2_0001", (str(tmp_path / "hlf.parquet"),), (), models, _scalers().to_dict(),
                         str(tmp_path / "out.parquet"))
    with pytest.raises(ValueError, match="partition 'qcd/seed2_0001': no llf_features files, which the particle"):
        score_file(task)
    assert not (tmp_path / "out.parquet").exists()


@pytest.mark.slow
def test_score_file_of_a_file_without_selected_events_writes_an_empty_table(tmp_path):
    pq.write_table(_hlf_table([]), tmp_path / "hlf.parquet")
    models = (("hlf_classifier", _save(tmp_path, "hlf_classifier")),)
    out = tmp_path / "out.parquet"
    task = FileScoreTask("qcd/seed2_0001", (str(tmp_path / "hlf.parquet"),), (), models, _scalers().to_dict(),
                         str(out))
    assert score_file(task) == {"partition_key": "qcd/seed2_0001", "rows": 0}
    table = pq.read_table(out)
    assert table.num_rows == 0 and table.schema == scores_schema(["hlf_classifier"])
