"""The model and tensor contract: shapes derived from the schema, one registry the whole platform reads."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lhc_assets.ml import contract as C
from lhc_assets.physics.schema import HLF_COLUMNS, LABEL_NAMES, LLF_COLUMNS, LLF_ROWS


def test_shapes_come_from_the_schema():
    assert C.HLF_SHAPE == (len(HLF_COLUMNS),) == (14,)
    assert C.GRU_SHAPE == (LLF_ROWS, len(LLF_COLUMNS)) == (801, 19)
    assert C.N_CLASSES == len(LABEL_NAMES) == 3
    assert C.WIDTHS == {C.HLF_INPUT: 14, C.GRU_INPUT: 801 * 19, C.LABEL: 3}
    assert set(C.INPUTS) == {"hlf", "gru", "inclusive"}


def test_sequence_steps_none_or_the_whole_list_mean_the_whole_list():
    assert C.normalize_sequence_steps(None) is None
    assert C.normalize_sequence_steps(LLF_ROWS) is None
    assert C.normalize_sequence_steps(128) == 128
    assert C.normalize_sequence_steps(1) == 1
    for bad in (0, -3, LLF_ROWS + 1):
        with pytest.raises(ValueError, match=rf"between 1 and {LLF_ROWS}, got {bad}"):
            C.normalize_sequence_steps(bad)


def test_the_registry_names_each_model_its_inputs_and_datasets():
    assert list(C.KERAS_MODELS) == ["hlf_classifier", "particle_sequence_classifier", "inclusive_classifier",
                                    "image_classifier"]
    hlf = C.keras_model("hlf_classifier")
    assert (hlf.inputs, hlf.train_set, hlf.test_set, hlf.reads_particles) == ("hlf", "hlf_train_set", "hlf_test_set",
                                                                              False)
    for name in ("particle_sequence_classifier", "inclusive_classifier", "image_classifier"):
        spec = C.keras_model(name)
        assert (spec.train_set, spec.test_set, spec.reads_particles) == ("train_set", "test_set", True)
    # Only the image classifier draws with the fitted scalers (its images undo the standardisation).
    assert [n for n, s in C.KERAS_MODELS.items() if s.needs_scalers] == ["image_classifier"]
    with pytest.raises(ValueError, match=r"unknown model 'cnn'; expected one of \['hlf_classifier'"):
        C.keras_model("cnn")
    with pytest.raises(ValueError, match=r"inputs must be one of"):
        C.KerasModelSpec("x", "hlf_classifier", "images", "a", "b")


def test_the_contract_imports_no_tensorflow_dagster_or_spark():
    # The distributed launcher and Spark's driver read the registry without starting TensorFlow.
    code = ("import sys, lhc_assets.ml.contract; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'dagster', 'pyspark') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow  # imports TensorFlow
def test_every_registered_model_takes_the_columns_of_its_inputs_and_predicts_the_classes():
    from lhc_assets.ml.preparation import FeatureScalers

    scalers = FeatureScalers(hlf_min=(0.0,) * 14, hlf_max=(1.0,) * 14, llf_mean=(0.0,) * 19, llf_std=(1.0,) * 19,
                             train_events=1, train_particles=1).to_dict()
    for spec in C.KERAS_MODELS.values():
        model = spec.build(seed=1, **({"scalers": scalers} if spec.needs_scalers else {}))
        assert model.name == spec.name
        names = sorted(t.name for t in model.inputs)
        assert names == sorted(C.INPUT_COLUMNS[spec.inputs])
        for tensor in model.inputs:
            expected = C.HLF_SHAPE if tensor.name == C.HLF_INPUT else (None, C.GRU_SHAPE[1])
            assert tuple(tensor.shape[1:]) == expected
        assert tuple(model.outputs[0].shape[1:]) == (C.N_CLASSES,)
