"""Exact checks on export/parity.py's decision that mutation testing showed were missing.

Each test pins a behaviour a surviving mutmut mutant changed (`make mutation`, docs/testing.md):
the tolerances per precision, compare_output's numbers on hand-made arrays (every value a power
of two, so each error is exact), the degenerate-reference verdict at its boundaries, the gate's
shapes and batches, the report's summary and failure message word for word, and the graph I/O
check on tiny hand-built ONNX graphs. Nothing here exports a model; expected values are written
out by hand.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from clients.contract import ModelContract, Resize
from export.errors import ParityError
from export.onnx_export import sample_input
from export.parity import (
    CaseResult,
    OutputCheck,
    ParityReport,
    Tolerance,
    _first_line,
    _size_error,
    _Spread,
    check_graph_io,
    compare_output,
    enforce,
    failure_message,
    first_failing_input,
    gate_cases,
    gate_shapes,
)
from export.settings import Profile

# ---- Tolerance ----------------------------------------------------------------------------------


def test_tolerance_per_precision():
    assert Tolerance.for_precision("fp32") == Tolerance(1e-4, 1e-3, 0.999, max_outliers=0.0, max_metric_drop=0.005)
    assert Tolerance.for_precision("fp16") == Tolerance(1e-2, 1e-2, 0.99, max_outliers=1e-3, max_metric_drop=0.01)
    assert Tolerance.for_precision("int8") == Tolerance(5e-2, 5e-2, 0.95, max_outliers=0.05, max_metric_drop=0.03)
    with pytest.raises(KeyError):
        Tolerance.for_precision("fp8")


def test_tolerance_overrides_keep_the_rest():
    assert Tolerance.for_precision("fp16", atol=0.5) == Tolerance(0.5, 1e-2, 0.99, 1e-3, 0.01)
    assert Tolerance.for_precision("int8", rtol=0.25) == Tolerance(5e-2, 0.25, 0.95, 0.05, 0.03)
    assert Tolerance.for_precision("fp32", atol=0.0, rtol=0.0) == Tolerance(0.0, 0.0, 0.999, 0.0, 0.005)
    assert Tolerance.for_precision("fp32", 2.0, 3.0) == Tolerance(2.0, 3.0, 0.999, 0.0, 0.005)
    assert Tolerance(1.0, 2.0, 0.5) == Tolerance(1.0, 2.0, 0.5, 0.0, 0.0)


# ---- compare_output -----------------------------------------------------------------------------
TOL = Tolerance(0.125, 0.25, 0.999)  # bound = 0.125 + 0.25 |ref|
REF = np.array([[0.0, 0.125, 1.0], [-4.0, 8.0, 0.0625]], np.float32)
GOT = np.array([[0.125, 0.25, 1.125], [-5.0, 8.0, 0.1875]], np.float32)
# diff   = [[0.125, 0.125, 0.125], [1, 0, 0.125]]
# bound  = [[0.125, 0.15625, 0.375], [1.125, 2.125, 0.140625]]: nothing above it (the first is equal)
# |ref| > atol only for 1, -4, 8 (0.125 is not above 0.125): relative errors 0.125, 0.25, 0


def test_raw_output_within_bounds():
    assert compare_output("depth", GOT, REF, TOL) == OutputCheck("depth", "raw", True, max_abs=1.0, max_rel=0.25,
                                                                 outliers=0.0, agreement=1.0)


def test_raw_output_with_one_outlier_in_six():
    got = GOT.copy()
    got[1, 1] = 10.25  # diff 2.25 > 2.125; relative 2.25 / 8
    check = compare_output("depth", got, REF, TOL)
    assert check == OutputCheck("depth", "raw", False, max_abs=2.25, max_rel=0.28125, outliers=1 / 6)
    allowed = compare_output("depth", got, REF, Tolerance(0.125, 0.25, 0.999, max_outliers=1 / 6))
    assert allowed.passed and allowed.outliers == 1 / 6
    assert not compare_output("depth", got, REF, Tolerance(0.125, 0.25, 0.999, max_outliers=0.16)).passed


def test_raw_output_relative_error_of_a_negative_reference():
    ref = np.array([-4.0, 2.0], np.float32)
    got = np.array([-5.0, 2.125], np.float32)  # relative 0.25 and 0.0625
    assert compare_output("x", got, ref, TOL).max_rel == 0.25


def test_raw_output_compared_in_float64():
    ref = np.array([1.0, 2.0], np.float16)
    got = np.array([1.0, 2.0], np.float16) + np.float16(2.0 ** -10)  # float16 spacing near 1 is 2**-10
    check = compare_output("x", got, ref, Tolerance(0.0, 0.0, 1.0, max_outliers=1.0))
    assert check.max_abs == 2.0 ** -10 and check.outliers == 0.5  # 2 + 2**-10 rounds back to 2 in float16


def test_non_finite_output_fails_whatever_the_outlier_budget():
    for bad in (np.nan, np.inf, -np.inf):
        got = REF.copy()
        got[0, 1] = bad  # the one difference; |ref| = 0.125 is not above atol: no relative error
        check = compare_output("depth", got, REF, Tolerance(0.125, 0.25, 0.999, max_outliers=1.0))
        assert check == OutputCheck("depth", "raw", False, max_abs=float("inf"), max_rel=0.0, outliers=1 / 6)


def test_non_finite_output_where_the_reference_is_big():
    got = REF.copy()
    got[0, 2] = np.nan  # |ref| = 1 > atol: relative error infinite
    check = compare_output("depth", got, REF, Tolerance(0.125, 0.25, 0.999, max_outliers=1.0))
    assert check.max_rel == float("inf") and check.max_abs == float("inf") and check.outliers == 1 / 6


def test_all_small_reference_has_no_relative_error():
    ref = np.array([0.0, 0.0625], np.float32)
    got = np.array([0.125, 0.0], np.float32)
    assert compare_output("x", got, ref, TOL) == OutputCheck("x", "raw", True, max_abs=0.125, max_rel=0.0,
                                                             outliers=0.0)


def test_empty_raw_output():
    empty = np.zeros((0, 3), np.float32)
    assert compare_output("x", empty, empty, TOL) == OutputCheck("x", "raw", True, 0.0, 0.0, 0.0, 1.0)


def test_a_shape_mismatch_fails_as_everything_off():
    check = compare_output("depth", np.zeros((1, 4, 5), np.float32), np.zeros((1, 4, 6), np.float32), TOL)
    assert check == OutputCheck("depth", "raw", False, max_abs=float("inf"), max_rel=0.0, outliers=1.0,
                                agreement=1.0)
    labels = compare_output("labels", np.zeros((2, 3), np.uint8), np.zeros((3, 2), np.uint8), TOL)
    assert labels.kind == "raw" and not labels.passed and labels.outliers == 1.0


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.int64])
def test_labels_agree_on_a_fraction_of_pixels(dtype):
    ref = np.zeros(1000, dtype)
    got = ref.copy()
    got[7] = 1  # 999 of 1000 agree: exactly the fp32 bar
    assert compare_output("labels", got, ref, TOL) == OutputCheck("labels", "labels", True, agreement=0.999)
    got[8] = 2
    assert compare_output("labels", got, ref, TOL) == OutputCheck("labels", "labels", False, agreement=0.998)


def test_labels_are_judged_by_the_reference_dtype():
    ref = np.array([1, 2, 3, 4], np.int64)
    got = np.array([1.0, 2.0, 3.0, 5.0], np.float32)
    assert compare_output("labels", got, ref, Tolerance(0, 0, 0.75)) == OutputCheck("labels", "labels", True,
                                                                                    agreement=0.75)
    empty = np.zeros((0,), np.uint8)
    assert compare_output("labels", empty, empty, TOL) == OutputCheck("labels", "labels", True, agreement=1.0)


# ---- the degenerate reference ---------------------------------------------------------------------
def spread(*outputs) -> _Spread:
    s = _Spread()
    for out in outputs:
        s.update(np.asarray(out))
    return s


def test_a_fresh_spread_has_seen_nothing():
    s = _Spread()
    assert (s.lo, s.hi, s.peak, s.labels, s.integer) == (np.inf, -np.inf, 0.0, set(), False)
    assert s.degenerate() is None  # every case failed: the failures say it


def test_spread_tracks_range_and_peak_over_updates():
    s = spread(np.array([3.0, -1.0]), np.array([2.0, 5.0]), np.array([-0.5]))
    assert (s.lo, s.hi, s.peak) == (-1.0, 5.0, 5.0)
    s.update(np.array([-7.0, np.nan, np.inf, -np.inf]))
    assert (s.lo, s.hi, s.peak) == (-7.0, 5.0, 7.0) and s.degenerate() is None
    assert isinstance(s.peak, float)


def test_non_finite_values_are_ignored():
    s = spread(np.array([np.nan, np.inf]))
    assert (s.lo, s.hi, s.peak) == (np.inf, -np.inf, 0.0) and s.degenerate() is None
    s = spread(np.array([2.0, np.nan]), np.array([np.inf, 2.0]))
    assert s.degenerate() == "the output is near-constant (2 .. 2)"


def test_near_zero_boundary():
    assert spread(np.array([5e-7, -5e-7])).degenerate() == "the output is near zero everywhere (max |value| 5e-07)"
    assert spread(np.zeros((2, 3))).degenerate() == "the output is near zero everywhere (max |value| 0)"
    assert spread(np.array([1e-6, -1e-6])).degenerate() is None  # exactly NEAR_ZERO is not below it


def test_near_constant_boundary():
    # 15625 - 15624.984375 == 1e-6 * 15625 exactly: a spread equal to the bound is near-constant
    assert spread(np.array([15625.0, 15624.984375])).degenerate() == "the output is near-constant (15625 .. 15625)"
    assert spread(np.array([15625.0, 15624.96875])).degenerate() is None
    assert spread(np.array([-3.0]), np.array([-3.0])).degenerate() == "the output is near-constant (-3 .. -3)"
    assert spread(np.array([0.5])).degenerate() == "the output is near-constant (0.5 .. 0.5)"  # one element


def test_near_constant_counts_float32_values():
    s = spread(np.array([1.5, 1.5], np.float32), np.array([0.25], np.float32))
    assert (s.lo, s.hi, s.peak) == (0.25, 1.5, 1.5) and s.degenerate() is None


def test_labels_one_class_everywhere():
    assert spread(np.zeros((2, 2), np.uint8), np.zeros((3,), np.uint8)).degenerate() == \
        "every pixel is class 0 at every gate shape"
    assert spread(np.full(4, 3, np.int64)).degenerate() == "every pixel is class 3 at every gate shape"
    assert spread(np.full(4, 3, np.int64), np.full(2, 5, np.int64)).degenerate() is None
    assert spread(np.array([0, 1, 2], np.int32)).degenerate() is None
    s = spread(np.array([4, 2, 9, 2], np.int32))
    assert s.integer and s.labels == {2, 4}  # two labels are enough to know it is not one


def test_empty_outputs_are_ignored():
    s = spread(np.zeros((0,), np.int64), np.full(4, 2.0))
    assert not s.integer and s.degenerate() == "the output is near-constant (2 .. 2)"
    assert spread(np.zeros((0, 2))).degenerate() is None


# ---- gate shapes and cases ------------------------------------------------------------------------
def test_gate_on_a_wide_profile():
    p = Profile((32, 32), (64, 64), (384, 384), max_batch=8)
    assert gate_shapes(p) == [(64, 64), (97, 131), (250, 333), (161, 67), (32, 32), (384, 384)]
    assert gate_cases(p) == [(1, (64, 64)), (4, (64, 64)), (1, (97, 131)), (4, (97, 131)), (1, (250, 333)),
                             (4, (250, 333)), (1, (161, 67)), (4, (161, 67)), (1, (32, 32)), (4, (32, 32)),
                             (1, (384, 384))]


def test_gate_skips_shapes_outside_the_profile(caplog):
    caplog.set_level(logging.INFO, logger="export.parity")
    p = Profile((64, 64), (64, 64), (200, 200), max_batch=2)
    assert gate_shapes(p) == [(64, 64), (97, 131), (161, 67), (200, 200)]
    assert [r.getMessage() for r in caplog.records] == [
        "parity: 250x333 lies outside the profile (64, 64)..(200, 200), skipped"]
    shapes = gate_shapes(Profile((64, 64), (64, 64), [200, 200], max_batch=2))  # a size given as a list
    assert shapes == [(64, 64), (97, 131), (161, 67), (200, 200)] and all(type(hw) is tuple for hw in shapes)
    assert gate_cases(p) == [(1, (64, 64)), (2, (64, 64)), (1, (97, 131)), (2, (97, 131)), (1, (161, 67)),
                             (2, (161, 67)), (1, (200, 200))]


def test_gate_edges_of_the_profile_are_inside():
    p = Profile((97, 67), (161, 131), (250, 333), max_batch=1)
    assert gate_shapes(p) == [(161, 131), (97, 131), (250, 333), (161, 67), (97, 67)]
    assert gate_cases(p) == [(1, (161, 131)), (1, (97, 131)), (1, (250, 333)), (1, (161, 67)), (1, (97, 67))]


def test_gate_at_a_max_equal_to_the_traced_shape_runs_every_batch():
    p = Profile((32, 32), (128, 128), (128, 128), max_batch=3)
    assert gate_shapes(p) == [(128, 128), (32, 32)]
    assert gate_cases(p) == [(1, (128, 128)), (3, (128, 128)), (1, (32, 32)), (3, (32, 32))]


def test_gate_batches_are_capped_at_four_except_for_a_fixed_graph():
    p = Profile((32, 32), (64, 64), (64, 64), max_batch=5)
    assert gate_cases(p) == [(1, (64, 64)), (4, (64, 64)), (1, (32, 32)), (4, (32, 32))]
    p = Profile((32, 32), (64, 64), (64, 64), max_batch=4)
    assert gate_cases(p) == [(1, (64, 64)), (4, (64, 64)), (1, (32, 32)), (4, (32, 32))]
    assert gate_shapes(Profile.fixed((40, 50), 8)) == [(40, 50)]
    assert gate_cases(Profile.fixed((40, 50), 8)) == [(1, (40, 50)), (8, (40, 50))]
    assert gate_cases(Profile.fixed((40, 50), 1)) == [(1, (40, 50))]
    assert gate_cases(Profile((40, 50), (40, 50), (40, 50), 3, static=True)) == [(1, (40, 50)), (3, (40, 50))]


# ---- reports ----------------------------------------------------------------------------------------
FP32 = Tolerance.for_precision("fp32")


def raw(name="depth", passed=True, max_abs=0.0, max_rel=0.0, outliers=0.0) -> OutputCheck:
    return OutputCheck(name, "raw", passed, max_abs=max_abs, max_rel=max_rel, outliers=outliers)


def labels(name="labels", passed=True, agreement=1.0) -> OutputCheck:
    return OutputCheck(name, "labels", passed, agreement=agreement)


def test_describe_each_kind():
    assert labels(agreement=0.995).describe(FP32) == "output 'labels' agrees on 99.500% of pixels (need >= 99.9%)"
    assert raw(max_abs=0.0123, max_rel=0.5, outliers=0.025).describe(FP32) == (
        "output 'depth' max abs err 0.0123, max rel err 0.5, 2.5% of values outside atol 0.0001 + rtol 0.001")
    assert raw("logits", max_abs=12345.0, max_rel=1e-7, outliers=1.0).describe(Tolerance(0.5, 2.0, 0.9)) == (
        "output 'logits' max abs err 1.23e+04, max rel err 1e-07, 100% of values outside atol 0.5 + rtol 2")


def test_case_result():
    assert CaseResult(1, (5, 7)).passed and CaseResult(1, (5, 7)).label == "batch 1 at 5x7"
    assert not CaseResult(2, (5, 7), [raw(passed=False)]).passed
    assert not CaseResult(2, (5, 7), [raw()], error="boom").passed
    assert CaseResult(2, (5, 7), [raw(), labels()]).passed


def report(*cases, **kw) -> ParityReport:
    return ParityReport(kw.pop("precision", "fp32"), kw.pop("tolerance", FP32), list(cases), **kw)


def test_worst_per_kind_and_key():
    r = report(CaseResult(1, (5, 7), [raw(max_abs=0.5, max_rel=0.25, outliers=0.0), labels(agreement=0.999)]),
               CaseResult(4, (9, 9), [raw(max_abs=0.125, max_rel=0.75, outliers=0.5), labels(agreement=0.9995)]),
               CaseResult(1, (9, 9), error="failed"))
    assert r.worst("raw", "max_abs") == 0.5 and r.worst("raw", "max_rel") == 0.75
    assert r.worst("raw", "outliers") == 0.5 and r.worst("labels", "agreement") == 0.999
    assert r.worst("labels", "max_abs") == 0.0
    only_raw = report(CaseResult(1, (5, 7), [raw(max_abs=0.5)]))
    assert only_raw.worst("labels", "agreement") is None and report().worst("raw", "max_abs") is None


def test_report_verdicts():
    ok = CaseResult(1, (5, 7), [raw()])
    bad = CaseResult(1, (9, 9), error="x")
    assert report(ok).passed and report(ok).cases_passed
    assert not report().passed and not report().cases_passed  # no case ran
    assert not report(ok, bad).passed and not report(ok, bad).cases_passed
    assert not report(ok, degenerate="flat").passed and report(ok, degenerate="flat").cases_passed
    assert report(ok, degenerate="flat", allow_degenerate=True).passed
    assert not report(bad, degenerate="flat", allow_degenerate=True).passed
    assert report(ok, CaseResult(4, (5, 7)), CaseResult(1, (2, 3))).shapes == [(2, 3), (5, 7)]


def test_summary_of_a_passing_report():
    r = report(CaseResult(1, (5, 7), [raw(max_abs=0.00123), labels(agreement=0.9995)]),
               CaseResult(4, (5, 7), [raw(max_abs=0.5), labels(agreement=1.0)]),
               CaseResult(1, (9, 9), [raw(max_abs=0.25), labels(agreement=0.99975)]))
    assert r.summary() == "parity passed on 3 cases over 2 shapes, worst max abs err 0.5, min label agreement 99.950%"


def test_summary_with_everything():
    r = report(CaseResult(1, (5, 7), [raw(max_abs=0.0012)]), degenerate="near zero", allow_degenerate=True,
               fallback="dynamic export failed",
               metric={"metric": "mIoU", "candidate": 0.5, "baseline": 0.625, "change": -0.125, "images": 8})
    assert r.summary() == ("parity passed on 1 cases over 1 shapes, worst max abs err 0.0012, degenerate reference "
                           "(near zero), fixed-size graph, mIoU 0.5 vs 0.625: -0.1250 on 8 images")
    r.metric["change"] = 0.03125
    r.allow_degenerate = False
    assert r.summary() == ("parity FAILED on 1 cases over 1 shapes, worst max abs err 0.0012, degenerate reference "
                           "(near zero), fixed-size graph, mIoU 0.5 vs 0.625: +0.0312 on 8 images")


def test_summary_of_nothing():
    assert report().summary() == "parity FAILED on 0 cases over 0 shapes"
    assert report(CaseResult(1, (5, 7), [labels(agreement=0.5, passed=False)])).summary() == (
        "parity FAILED on 1 cases over 1 shapes, min label agreement 50.000%")


def test_to_json():
    r = report(CaseResult(2, (5, 7), [labels(agreement=0.75, passed=False)]), seconds=1.5, divergence="enc.0")
    assert r.to_json() == {
        "precision": "fp32",
        "tolerance": {"atol": 1e-4, "rtol": 1e-3, "min_agreement": 0.999, "max_outliers": 0.0,
                      "max_metric_drop": 0.005},
        "cases": [{"batch": 2, "hw": (5, 7), "error": None,
                   "outputs": [{"name": "labels", "kind": "labels", "passed": False, "max_abs": 0.0,
                                "max_rel": 0.0, "outliers": 0.0, "agreement": 0.75}]}],
        "seconds": 1.5,
        "divergence": "enc.0",
        "metric": None,
        "degenerate": None,
        "allow_degenerate": False,
        "fallback": None,
        "passed": False,
    }
    assert report(CaseResult(1, (5, 7), [raw()])).to_json()["passed"] is True


# ---- failure message and enforce ----------------------------------------------------------------
def test_failure_message_names_the_first_failing_case_and_output():
    r = report(CaseResult(1, (64, 64), [raw()]),
               CaseResult(4, (97, 131), [raw("labels", passed=True), labels("confidence", False, 0.5),
                                         labels("third", False, 0.25)]),
               CaseResult(1, (250, 333), error="onnxruntime failed: X"),
               precision="fp16", tolerance=Tolerance.for_precision("fp16"))
    assert failure_message(r) == ("parity gate failed (fp16) at batch 4 at 97x131: output 'confidence' agrees on "
                                  "50.000% of pixels (need >= 99.0%); 2 of 3 cases failed; nothing was published")
    r.divergence = "decoder.up2"
    assert failure_message(r) == ("parity gate failed (fp16) at batch 4 at 97x131: output 'confidence' agrees on "
                                  "50.000% of pixels (need >= 99.0%); 2 of 3 cases failed; first diverging module: "
                                  "decoder.up2; nothing was published")


def test_failure_message_of_an_error_case():
    r = report(CaseResult(1, (97, 131), [raw(passed=False)], error="the PyTorch model itself fails at 97x131: E"),
               precision="int8")
    assert failure_message(r) == ("parity gate failed (int8) at batch 1 at 97x131: the PyTorch model itself fails "
                                  "at 97x131: E; 1 of 1 cases failed; nothing was published")


def test_failure_message_without_a_failing_case():
    degenerate = report(CaseResult(1, (5, 7), [raw()]), degenerate="the output is near zero everywhere")
    assert failure_message(degenerate) == (
        "parity gate failed (fp32): the PyTorch reference is degenerate: the output is near zero everywhere, so "
        "matching it proves nothing; check the weights (untrained or not loaded?) or pass --allow-degenerate; "
        "nothing was published")
    assert failure_message(report(precision="fp16")) == "parity gate failed (fp16): no case ran; nothing was published"
    allowed = report(degenerate="flat", allow_degenerate=True)
    assert failure_message(allowed) == "parity gate failed (fp32): no case ran; nothing was published"


def test_enforce_passes_quietly_with_a_summary_in_the_log(caplog):
    caplog.set_level(logging.INFO, logger="export.parity")
    enforce(report(CaseResult(1, (5, 7), [raw(max_abs=0.25)]), seconds=1.25))
    assert [r.getMessage() for r in caplog.records] == [
        "parity passed on 1 cases over 1 shapes, worst max abs err 0.25 in 1.2 s"]
    assert [r.levelno for r in caplog.records] == [logging.INFO]


def test_enforce_raises_with_the_message_and_the_report(caplog):
    caplog.set_level(logging.INFO, logger="export.parity")
    r = report(CaseResult(1, (5, 7), error="boom"))
    with pytest.raises(ParityError) as info:
        enforce(r)
    assert str(info.value) == ("parity gate failed (fp32) at batch 1 at 5x7: boom; 1 of 1 cases failed; "
                               "nothing was published")
    assert info.value.report is r and caplog.records == []
    with pytest.raises(ParityError) as info:
        enforce(report(CaseResult(1, (5, 7), [raw()]), degenerate="flat"))
    assert "degenerate: flat" in str(info.value)


# ---- helpers of the run ---------------------------------------------------------------------------------
def test_first_line_of_an_exception():
    assert _first_line(ValueError("  first line \nsecond\n")) == "ValueError: first line"
    assert _first_line(RuntimeError("")) == "RuntimeError:"
    assert _first_line(KeyError("k")) == "KeyError: 'k'"


def test_size_error_names_the_first_output_off_the_input_size():
    ok = [np.zeros((2, 5, 7), np.uint8), np.zeros((2, 5, 7), np.float32), np.zeros((2, 3, 5, 7), np.float32)]
    assert _size_error(["labels", "confidence", "logits"], ok, (5, 7)) is None
    assert _size_error(["labels"], ok[:1], [5, 7]) is None
    bad = [ok[0], np.zeros((2, 5, 6), np.float32), np.zeros((2, 4, 7), np.float32)]
    assert _size_error(["labels", "confidence", "logits"], bad, (5, 7)) == (
        "output 'confidence' is 5x6 for a 5x7 input (the contract promises the input size): the model crops or "
        "rounds sizes it cannot divide; serve it at sizes it divides (--resize stride:N with its patch size or "
        "stride, or letterbox:HxW)")
    assert _size_error(["depth"], [np.zeros((1, 7, 5), np.float32)], (5, 7)).startswith("output 'depth' is 7x5 for")


DEPTH = ModelContract(name="d", task="depth", resize=Resize("letterbox", 8, 8), output_kind="depth")


def test_first_failing_input_regenerates_the_seed_of_the_first_compared_failure():
    r = report(CaseResult(1, (5, 7), [raw()]),
               CaseResult(1, (6, 6), error="pytorch failed"),  # nothing compared: no divergence to probe
               CaseResult(2, (4, 6), [raw(passed=False)]),
               CaseResult(1, (3, 3), [raw(passed=False)]))
    x = first_failing_input(r, DEPTH)
    assert x.shape == (2, 4, 6, 3) and x.dtype == torch.uint8
    assert torch.equal(x, sample_input(DEPTH, 2, (4, 6), seed=1002))
    assert not torch.equal(x, sample_input(DEPTH, 2, (4, 6), seed=1001))
    assert first_failing_input(report(CaseResult(1, (5, 7), [raw()]), CaseResult(1, (6, 6), error="x")), DEPTH) is None
    assert first_failing_input(report(), DEPTH) is None


# ---- the graph's inputs and outputs ------------------------------------------------------------------------
def graph(path, inputs=(("image", ["batch", "height", "width", 3]),), outputs=("depth",)):
    """An Identity-only graph with the given input dims (str: symbolic, int: fixed, None: unknown)."""
    nodes = [helper.make_node("Identity", [inputs[0][0]], [name]) for name in outputs]
    ins = [helper.make_tensor_value_info(n, TensorProto.UINT8, dims) for n, dims in inputs]
    outs = [helper.make_tensor_value_info(n, TensorProto.UINT8, None) for n in outputs]
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", ins, outs)), str(path))
    return path


FIXED = ("the exported graph fixed the input {} to {} (the traced size): the model's forward turns the input size "
         "into a Python number (e.g. int(x.shape[-1]) or a branch on it); keep sizes symbolic, or pass --static")


def test_graph_io_that_matches(tmp_path):
    assert check_graph_io(graph(tmp_path / "a.onnx"), DEPTH) is None
    unknown = graph(tmp_path / "b.onnx", inputs=(("image", [None, None, None, 3]),))  # dim_value 0: not fixed
    assert check_graph_io(unknown, DEPTH) is None
    seg = ModelContract(name="s", task="segmentation", resize=Resize("letterbox", 8, 8), num_classes=2,
                        output_kind="labels+confidence")
    assert check_graph_io(graph(tmp_path / "c.onnx", outputs=("labels", "confidence")), seg) is None


def test_graph_io_wrong_names(tmp_path):
    assert check_graph_io(graph(tmp_path / "a.onnx", inputs=(("pixels", ["b", "h", "w", 3]),)), DEPTH) == (
        "the graph's inputs are ['pixels'], expected ['image']")
    two = graph(tmp_path / "b.onnx", inputs=(("image", ["b", "h", "w", 3]), ("extra", [1])))
    assert check_graph_io(two, DEPTH) == "the graph's inputs are ['image', 'extra'], expected ['image']"
    assert check_graph_io(graph(tmp_path / "c.onnx", outputs=("alpha",)), DEPTH) == (
        "the graph's outputs are ['alpha'], expected ['depth']")
    seg = ModelContract(name="s", task="segmentation", resize=Resize("letterbox", 8, 8), num_classes=2,
                        output_kind="labels+confidence")
    assert check_graph_io(graph(tmp_path / "d.onnx", outputs=("confidence", "labels")), seg) == (
        "the graph's outputs are ['confidence', 'labels'], expected ['labels', 'confidence']")


@pytest.mark.parametrize("dims,axis,value", [
    ([2, "h", "w", 3], "batch", 2), (["b", 64, "w", 3], "height", 64), (["b", "h", 48, 3], "width", 48),
    ([1, "h", "w", 3], "batch", 1), (["b", 1, 1, 3], "height", 1),
])
def test_graph_io_a_fixed_axis_of_a_dynamic_contract(tmp_path, dims, axis, value):
    path = graph(tmp_path / "a.onnx", inputs=(("image", dims),))
    assert check_graph_io(path, DEPTH) == FIXED.format(axis, value)


def test_graph_io_axes_of_a_float_input(tmp_path):
    nchw = ModelContract(name="d", task="depth", resize=Resize("letterbox", 8, 8), output_kind="depth",
                         input_dtype="float32")
    assert check_graph_io(graph(tmp_path / "a.onnx", inputs=(("image", ["b", 3, "h", "w"]),)), nchw) is None
    assert check_graph_io(graph(tmp_path / "b.onnx", inputs=(("image", ["b", 3, "h", 40]),)), nchw) == \
        FIXED.format("width", 40)
    assert check_graph_io(graph(tmp_path / "c.onnx", inputs=(("image", ["b", 3, 40, "w"]),)), nchw) == \
        FIXED.format("height", 40)


def test_graph_io_of_a_static_contract_checks_only_the_batch(tmp_path):
    static = ModelContract(name="d", task="depth", resize=Resize("letterbox", 8, 8), output_kind="depth",
                           static_shape=(8, 8))
    assert check_graph_io(graph(tmp_path / "a.onnx", inputs=(("image", ["b", 8, 8, 3]),)), static) is None
    assert check_graph_io(graph(tmp_path / "b.onnx", inputs=(("image", [4, 8, 8, 3]),)), static) == \
        FIXED.format("batch", 4)


# ---- the run, on a hand-built graph --------------------------------------------------------------------
def mean_rgb_graph(path, reshape_to=None):
    """uint8 (B, H, W, 3) -> depth (B, H, W), the mean over RGB; with `reshape_to`, a graph that
    only runs at that one (B, H, W) (onnxruntime fails at every other shape)."""
    nodes = [helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["f", "axes"], ["m" if reshape_to else "depth"], keepdims=0)]
    inits = [helper.make_tensor("axes", TensorProto.INT64, [1], [3])]
    if reshape_to:
        nodes.append(helper.make_node("Reshape", ["m", "shape"], ["depth"]))
        inits.append(helper.make_tensor("shape", TensorProto.INT64, [3], list(reshape_to)))
    g = helper.make_graph(nodes, "mean_rgb",
                          [helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", "height", "width", 3])],
                          [helper.make_tensor_value_info("depth", TensorProto.FLOAT, ["batch", "height", "width"])],
                          inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


class RecordingMean(torch.nn.Module):
    """The eager twin of mean_rgb_graph; keeps every input it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[torch.Tensor] = []

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor]:
        self.inputs.append(image.clone())
        return (image.float().mean(-1),)


GATE_DEPTH = ModelContract(name="d", task="depth", resize=Resize("letterbox", 8, 12), output_kind="depth")
SMALL = Profile((8, 12), (8, 12), (16, 16), max_batch=2)  # cases: 8x12 at batch 1 and 2, 16x16 at batch 1


def test_run_gate_feeds_each_case_its_own_seeded_input(tmp_path):
    import time

    from export.parity import run_gate

    model = RecordingMean()
    t0 = time.perf_counter()
    r = run_gate(model, mean_rgb_graph(tmp_path / "m.onnx"), GATE_DEPTH, SMALL, FP32)
    elapsed = time.perf_counter() - t0
    assert r.passed and r.precision == "fp32" and r.tolerance is FP32
    assert [(c.batch, c.hw) for c in r.cases] == [(1, (8, 12)), (2, (8, 12)), (1, (16, 16))]
    assert 0.0 < r.seconds <= elapsed
    assert len(model.inputs) == 3
    for i, (x, (b, hw)) in enumerate(zip(model.inputs, gate_cases(SMALL))):
        assert torch.equal(x, sample_input(GATE_DEPTH, b, hw, seed=1000 + i))
    assert run_gate(RecordingMean(), tmp_path / "m.onnx", GATE_DEPTH, SMALL, FP32, "fp16").precision == "fp16"


def test_run_gate_reports_onnxruntime_failures_without_logging_them(tmp_path, capfd):
    import warnings

    from export.parity import run_gate

    path = mean_rgb_graph(tmp_path / "r.onnx", reshape_to=(1, 8, 12))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. onnxruntime's warning for a provider it does not have
        r = run_gate(RecordingMean(), path, GATE_DEPTH, SMALL, FP32)
    assert [c.passed for c in r.cases] == [True, False, False]
    assert r.cases[1].error.startswith("onnxruntime failed: Fail: [ONNXRuntimeError]")
    assert r.cases[2].error.startswith("onnxruntime failed: Fail: [ONNXRuntimeError]")  # the gate went on
    assert r.cases[1].outputs == [] and [o.name for o in r.cases[0].outputs] == ["depth"]
    err = capfd.readouterr().err
    assert "onnxruntime" not in err and "EP Error" not in err  # a failing shape is a finding, not a log line


def test_the_session_runs_on_the_cpu_and_logs_only_fatal_errors(tmp_path):
    from export.parity import _session

    session = _session(mean_rgb_graph(tmp_path / "m.onnx"))
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert session.get_session_options().log_severity_level == 4


def test_graph_io_reads_no_external_weights(tmp_path):
    """Only the graph's I/O is read: the weights, maybe gigabytes in a separate file, are not loaded."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], np.full(16, 0.5, np.float32).tobytes(), raw=True)
    nodes = [helper.make_node("Identity", ["image"], ["depth"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image", TensorProto.UINT8, ["b", "h", "w", 3])],
                          [helper.make_tensor_value_info("depth", TensorProto.UINT8, None)], [w])
    path = tmp_path / "m.onnx"
    onnx.save_model(helper.make_model(g), str(path), save_as_external_data=True, location="weights.bin",
                    size_threshold=0)
    (tmp_path / "weights.bin").unlink()  # loading the weights would now fail
    assert check_graph_io(path, DEPTH) is None


class ScriptedMean(torch.nn.Module):
    """The eager mean, but at call `fail` it raises, at call `crop` it drops a row, at call `off`
    it is 1.0 off: one finding of each kind, each followed by cases that must still run."""

    def __init__(self, fail: int, crop: int, off: int) -> None:
        super().__init__()
        self.fail, self.crop, self.off, self.calls = fail, crop, off, 0

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor]:
        call, self.calls = self.calls, self.calls + 1
        if call == self.fail:
            raise RuntimeError("boom\nsecond line")
        out = image.float().mean(-1)
        if call == self.crop:
            out = out[:, 1:]
        if call == self.off:
            out = out + 1.0
        return (out,)


def test_run_gate_keeps_going_after_each_kind_of_finding(tmp_path, caplog):
    from export.parity import run_gate

    caplog.set_level(logging.DEBUG, logger="export.parity")
    profile = Profile((32, 32), (64, 64), (384, 384), max_batch=2)
    r = run_gate(ScriptedMean(fail=1, crop=3, off=5), mean_rgb_graph(tmp_path / "m.onnx"), GATE_DEPTH, profile, FP32)
    assert [(c.batch, c.hw) for c in r.cases] == gate_cases(profile) and len(r.cases) == 11
    assert [c.passed for c in r.cases] == [True, False, True, False, True, False, True, True, True, True, True]
    assert r.cases[1].error == "the PyTorch model itself fails at 64x64: RuntimeError: boom"
    assert r.cases[3].error.startswith("output 'depth' is 96x131 for a 97x131 input (the contract promises")
    assert r.cases[1].outputs == [] and r.cases[3].outputs == []
    assert r.cases[5].error is None and [(o.name, o.kind, o.passed) for o in r.cases[5].outputs] == [
        ("depth", "raw", False)]
    assert abs(r.cases[5].outputs[0].max_abs - 1.0) < 1e-4 and r.cases[5].outputs[0].outliers == 1.0  # float32 means
    assert all([o.name for o in c.outputs] == ["depth"] for c in r.cases if c.passed)
    assert r.degenerate is None
    assert [m.getMessage() for m in caplog.records if m.levelno == logging.DEBUG] == [
        "parity batch 1 at 64x64: ok", "parity batch 1 at 97x131: ok", "parity batch 1 at 250x333: ok",
        "parity batch 2 at 250x333: FAILED", "parity batch 1 at 161x67: ok", "parity batch 2 at 161x67: ok",
        "parity batch 1 at 32x32: ok", "parity batch 2 at 32x32: ok", "parity batch 1 at 384x384: ok"]
