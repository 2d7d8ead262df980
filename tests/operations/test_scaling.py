"""The scaling study's model: fitted to measurements made from known parameters, it gives them back."""

from __future__ import annotations

import pytest

from lhc_assets.operations.scaling import Measurement, StageModel, fit_stage, project, speedups

TRUE = StageModel(stage="s", serial_seconds=2.0, serial_seconds_per_event=1e-4, event_cost_core_seconds=5e-3,
                  task_overhead_core_seconds=0.3, max_relative_error=0.0, events_per_task=1000)


def _measure(model: StageModel, events: int, workers: int, cores: int, driver_noise: float = 0.0) -> Measurement:
    n = workers * cores
    k = model.tasks(events, n)
    run = model.event_cost_core_seconds * events
    held = run + model.task_overhead_core_seconds * k
    driver = model.serial(events) + driver_noise
    return Measurement("s", workers, cores, events, driver + held / n, driver, held / n, k, held, run)


GRID = [(1, 1), (1, 2), (2, 1), (2, 2)]


def test_fit_recovers_the_parameters_it_was_made_from():
    data = [_measure(TRUE, n, w, c) for n in (2_000, 8_000) for w, c in GRID]
    fitted = fit_stage(data, events_per_task=1000)
    assert fitted.serial_seconds == pytest.approx(2.0, rel=1e-6)
    assert fitted.serial_seconds_per_event == pytest.approx(1e-4, rel=1e-6)
    assert fitted.event_cost_core_seconds == pytest.approx(5e-3, rel=1e-6)
    assert fitted.task_overhead_core_seconds == pytest.approx(0.3, rel=1e-3)
    assert fitted.max_relative_error < 1e-6
    assert fitted.seconds(50_000, 8) == pytest.approx(TRUE.seconds(50_000, 8), rel=1e-6)


def test_driver_time_that_does_not_grow_beyond_its_noise_is_not_extrapolated():
    flat = StageModel(**{**TRUE.to_dict(), "serial_seconds_per_event": 0.0})
    # +-0.2 s of noise between shapes, and the larger input's driver time happens to be 0.1 s higher.
    data = [_measure(flat, n, w, c, noise) for n, shift in ((2_000, 0.0), (8_000, 0.1))
            for (w, c), noise in zip(GRID, (shift - 0.2, shift + 0.2, shift, shift), strict=True)]
    fitted = fit_stage(data, events_per_task=1000)
    assert fitted.serial_seconds_per_event == 0.0
    assert fitted.serial_seconds == pytest.approx(2.05, abs=1e-9)


def test_coefficients_are_never_negative():
    # Driver time that falls with more events, and tasks that held their cores for less than Spark's run time
    # (clock granularity): unconstrained, both would come out negative.
    data = [Measurement("s", 1, c, n, 2.0 - n / 4_000 + 4.0 / c, 2.0 - n / 4_000 + 1e-3 * c, 4.0 / c, 4,
                        3.9, 4.0) for n in (1_000, 4_000) for c in (1, 2)]
    fitted = fit_stage(data)
    assert fitted.serial_seconds_per_event == 0.0 and fitted.task_overhead_core_seconds == 0.0
    assert fitted.event_cost_core_seconds > 0


def test_speedup_and_efficiency_against_the_smallest_shape():
    data = [Measurement("s", 1, 1, 100, 10.0, 1.0, 9.0, 1), Measurement("s", 1, 2, 100, 6.0, 1.0, 5.0, 2),
            Measurement("s", 2, 1, 100, 8.0, 1.0, 7.0, 2)]
    rows = {r["shape"]: r for r in speedups(data)}
    assert rows["1x1"]["speedup"] == 1.0 and rows["1x1"]["efficiency"] == 1.0
    assert rows["1x2"]["speedup"] == pytest.approx(10 / 6, abs=1e-3)
    assert rows["1x2"]["efficiency"] == pytest.approx(10 / 6 / 2, abs=1e-3)
    assert rows["2x1"]["efficiency"] == pytest.approx(10 / 8 / 2, abs=1e-3)


def test_projection_amdahl_and_event_size():
    rows = project(TRUE, 1_000_000, [10, 1000])
    serial = 2.0 + 100.0
    assert rows[0]["seconds"] == pytest.approx(serial + (5_000 + 0.3 * 1000) / 10, abs=0.1)
    assert rows[1]["tasks"] == 1000 and rows[1]["serial_share"] > rows[0]["serial_share"]
    doubled = project(TRUE, 1_000_000, [10], event_size_factor=2.0)[0]
    assert doubled["seconds"] == pytest.approx(serial + (10_000 + 0.3 * 1000) / 10, abs=0.1)
    assert TRUE.serial_fraction(1_000_000) == pytest.approx(serial / TRUE.seconds(1_000_000, 1))
