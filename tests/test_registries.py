"""The plug-in registries: names written once, files found without an import list, and
backbone families that answer for their own model names."""
from __future__ import annotations

import pkgutil

import pytest

import exapt.penalties as penalties_pkg
import exapt.strategies as strategies_pkg
from exapt.backbones import family_of, list_models, load_backbone, split_scratch
from exapt.errors import ExaptError
from exapt.registry import BACKBONES, STRATEGIES, Registry
from exapt.penalties import PENALTIES

HELPERS = {"strategies": {"base", "new_modules"}, "penalties": {"base", "cli", "fisher"}}


def test_register_gives_the_class_its_name_and_refuses_a_second_one():
    reg = Registry("thing")

    @reg.register("spoon")
    class Spoon:
        pass

    assert Spoon.name == "spoon" and reg.get("spoon") is Spoon
    with pytest.raises(ValueError, match="thing 'spoon' registered twice"):
        reg.register("spoon")(type("Other", (), {}))
    with pytest.raises(ExaptError, match="unknown thing 'fork'; choose one of: spoon"):
        reg.get("fork")


@pytest.mark.parametrize("registry", [STRATEGIES, PENALTIES, BACKBONES], ids=lambda r: r.kind)
def test_every_registered_name_is_the_class_name_field(registry):
    assert registry.names()
    for name, cls in registry.items():
        assert cls.name == name


@pytest.mark.parametrize("package, registry, kind", [(strategies_pkg, STRATEGIES, "strategies"),
                                                     (penalties_pkg, PENALTIES, "penalties")])
def test_every_module_of_a_plugin_package_is_found(package, registry, kind):
    """Each file other than the shared helpers registers something, and is imported by
    the package itself (no list kept by hand)."""
    modules = {m.name for m in pkgutil.iter_modules(package.__path__)} - HELPERS[kind]
    registered = {cls.__module__.rsplit(".", 1)[1] for _, cls in registry.items()}
    assert modules == registered


# "shaped" names no model of its own: it claims NAME@K of the other families' names (below)
@pytest.mark.parametrize("name", [n for n, cls in BACKBONES.items() if not cls.catch_all and n != "shaped"])
def test_a_family_claims_its_own_names_and_their_scratch_twins(name):
    family = family_of(name)
    assert family.name == name and family_of(f"scratch:{name}").name == name
    assert family_of(f"{name}:1").name == name
    assert family.input_kind in ("text", "image", "features") and family.rows()


def test_a_layer_cut_of_an_encoder_belongs_to_the_shaped_family():
    for spec in ("minilm-l6@3", "scratch:minilm-l6@3", "/models/my-bert@2:heads=4-3"):
        assert family_of(spec).name == "shaped"
    assert family_of("minilm-l6").name != "shaped" and family_of("cnn@3").name != "shaped"


def test_names_no_family_claims_go_to_the_hugging_face_family():
    for spec in ("minilm-l6", "scratch:minilm-l6", "/models/my-bert", "cnnish-folder", "mlpx"):
        assert family_of(spec).catch_all
    assert split_scratch("scratch:mlp:4") == ("mlp:4", True) and split_scratch("mlp") == ("mlp", False)


def test_what_rank_and_shift_read_from_a_family():
    assert not family_of("mlp").pretrained and family_of("mlp").input_kind == "features"
    assert not family_of("cnn").pretrained and family_of("cnn:8,16").block_count("cnn:8,16") == 2
    eff = family_of("efficientnet-lite0:96")
    assert eff.pretrained and eff.input_kind == "image" and eff.block_count("efficientnet-lite0:96") == 9
    with pytest.raises(ExaptError, match="at least 32 pixels"):
        eff.check_name("efficientnet-lite0:8")


def test_list_models_has_one_row_per_form_and_the_scratch_twin_last():
    rows = [r["name"] for r in list_models()]
    assert rows[0] == "minilm-l6" and rows[-1] == "scratch:NAME"
    assert {"PATH", "mlp[:H1,H2,...]", "cnn[:W1,W2,...]", "efficientnet-lite0[:SIZE]"} <= set(rows)


def test_load_backbone_goes_through_the_family():
    bb = load_backbone("scratch:mlp:5,3", n_inputs=4)
    assert bb.identity()["model"] == "mlp:5,3" and bb.feature_dim == 3
    with pytest.raises(ExaptError, match="write mlp:H1,H2 with integer widths"):
        load_backbone("mlp:a", n_inputs=4)
    with pytest.raises(ExaptError, match="takes images, not text"):
        load_backbone("cnn")


def test_a_strategy_declares_what_it_needs_before_training():
    from exapt.strategies import parse_strategy

    full, probe, lpft = parse_strategy("full"), parse_strategy("linear-probe:0.25"), parse_strategy("lp-ft:pairs=4")
    full.check_task("regression", "full")
    assert not full.fits_probe and full.probe_C == 1.0 and full.probe_features_cacheable
    assert full.extra_probe_examples(None, [], "full") is None
    assert full.before_training(None, [], [], 1e-3, 0) == {}
    assert probe.fits_probe and probe.probe_C == 0.25 and probe.probe_features_cacheable
    assert lpft.fits_probe and not lpft.probe_features_cacheable
    with pytest.raises(ExaptError, match=r"--strategy lp-ft:pairs=4: contrastive pairs \(same class / other class\) "
                                         "need single-label classification; this task is multilabel"):
        lpft.check_task("multilabel", "lp-ft:pairs=4")
    with pytest.raises(ExaptError, match="--strategy linear-probe:names=1: names= needs single-label"):
        parse_strategy("linear-probe:names=1").check_task("regression", "linear-probe:names=1")
