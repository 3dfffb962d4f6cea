"""PruneConfig and CalibConfig: values parsed once into typed fields, the CLI's flags built from them."""

import json

import pytest

from prunekit.cli import _config, build_parser
from prunekit.data import CalibConfig, Sampling
from prunekit.errors import PrunekitError
from prunekit.oneshot.config import Allocation, CalibDtype, PruneConfig, Refine, Sequential
from prunekit.oneshot.methods import METHODS, Method, Statistics
from prunekit.selection import Pattern, Scope


def _prune_args(*argv):
    return build_parser().parse_args(["prune", "--out", "o", *argv])


def test_cli_defaults_are_the_config_defaults():
    args = _prune_args()
    assert _config(PruneConfig, args) == PruneConfig() and _config(CalibConfig, args) == CalibConfig()


def test_every_config_field_has_a_flag():
    args = _prune_args("--method", "sparsegpt", "--sparsity", "0.6", "--scope", "row", "--allocation", "owl",
                       "--include", "mlp", "--include", "attn", "--exclude", "down", "--min-layer-sparsity", "0.1",
                       "--max-layer-sparsity", "0.9", "--strict", "--percdamp", "0.05", "--blocksize", "64",
                       "--owl-m", "4", "--owl-lambda", "0.1", "--batch-size", "2", "--sequential", "sublayer",
                       "--refine", "admm", "--admm-iters", "5", "--calib-dtype", "bfloat16", "--calib", "wikitext2",
                       "--nsamples", "8", "--seqlen", "256", "--seed", "3", "--calib-sampling", "stream")
    assert _config(PruneConfig, args) == PruneConfig(
        method="sparsegpt", sparsity=0.6, scope="row", allocation="owl", include=("mlp", "attn"), exclude=("down",),
        min_layer_sparsity=0.1, max_layer_sparsity=0.9, strict=True, percdamp=0.05, blocksize=64, owl_m=4.0,
        owl_lambda=0.1, batch_size=2, sequential="sublayer", refine="admm", admm_iters=5, calib_dtype="bfloat16")
    assert _config(CalibConfig, args) == CalibConfig("wikitext2", 8, 256, 3, "stream")


def test_values_become_typed_fields_once():
    c = PruneConfig(method="wanda", pattern="2:4", calib_dtype="bfloat16")
    assert c.method is Method.WANDA and c.scope is Scope.ROW and c.nm == (2, 4) and c.sparsity == 0.5
    assert c.allocation is Allocation.UNIFORM and c.sequential is Sequential.BLOCK and c.refine is Refine.NONE
    assert c.calib_dtype.dtype is not None and CalibDtype.MODEL.dtype is None
    g = PruneConfig(scope="global")
    assert (g.scope, g.allocation) == (Scope.LAYER, Allocation.GLOBAL)
    assert CalibConfig(sampling="documents").sampling is Sampling.DOCUMENTS
    assert json.loads(json.dumps(c.to_dict()))["method"] == "wanda"  # enums are their strings in the manifest


def test_the_method_table_drives_statistics_and_defaults():
    assert set(METHODS) == set(Method)
    for method, row in METHODS.items():
        c = PruneConfig(method=method)
        assert c.scope == row.default_scope and c.statistics == row.statistics
        assert c.needs_calibration == (row.statistics != Statistics.NONE)
        assert row.score is not None or row.update is not None  # something chooses the mask
    assert PruneConfig(method="wanda", refine="admm").statistics is Statistics.XTX
    with pytest.raises(PrunekitError, match="blocksize 30 must be a multiple of M=4"):
        PruneConfig(method="sparsegpt", pattern="2:4", blocksize=30)
    PruneConfig(method="wanda", pattern="2:4", blocksize=30)  # no column blocks: blocksize is not used


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"method": "obs"}, "unknown method 'obs'"), ({"scope": "column"}, "unknown scope"),
    ({"allocation": "even"}, "unknown allocation"), ({"sequential": "all"}, "unknown sequential mode"),
    ({"refine": "lbfgs"}, "unknown refine"), ({"calib_dtype": "int8"}, "unknown calib_dtype"),
    ({"method": "magnitude", "refine": "admm"}, "use it with wanda, sparsegpt"),
    ({"pattern": "2:4", "allocation": "owl"}, "does not apply to the N:M pattern"),
])
def test_bad_values(kwargs, message):
    with pytest.raises(PrunekitError, match=message):
        PruneConfig(**kwargs)


def test_pattern_language_of_the_speed_tools():
    assert Pattern.parse("50%") == Pattern(0.5) and str(Pattern.parse("50%")) == "50%"
    assert Pattern.parse("2:4") == Pattern(0.5, (2, 4)) and str(Pattern.parse("2:4")) == "2:4"
    assert str(Pattern.parse("12.5%")) == "12.5%"
    for bad in ("half%", "0%", "100%", "50", "5:4", "2:4:8"):
        with pytest.raises(PrunekitError):
            Pattern.parse(bad)
