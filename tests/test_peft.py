"""Parameter-efficient strategies beyond the contract matrix (test_strategies_contract.py):
the PEFT adapter folder a run carries, `exapt merge`, the base-model check, the
trainable fraction, and bad options. All on the tiny BERT (2 layers, width 32)."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import exapt
from exapt.backbones.base import pool
from exapt.cli import main
from exapt.data import load_data
from exapt.errors import ExaptError
from exapt.merge import merge_run
from exapt.files import load_tensors

LR = 1e-2  # large enough that two epochs move every adapter well away from its start


def quiet(*_a, **_k):
    pass


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_bert, tweets_small):
    """spec -> a run trained for 2 epochs at lr 1e-2 without validation split (made once, read-only)."""
    made: dict[str, exapt.Run] = {}

    def get(spec: str):
        if spec not in made:
            out = tmp_path_factory.mktemp("peft") / spec.replace(":", "-").replace("=", "").replace(",", "-")
            with pytest.MonkeyPatch.context() as mp:  # the isolated cache of conftest's autouse fixture
                mp.setenv("EXAPT_CACHE", str(tmp_path_factory.getbasetemp() / "exapt-cache"))
                made[spec] = exapt.fit(str(tweets_small), spec, str(tiny_bert), epochs=2, lr=LR, val_fraction=0,
                                       out=out, progress=False, log=quiet)
        return made[spec]

    return get


@pytest.fixture(scope="module")
def table(tweets_test_small):
    return load_data(str(tweets_test_small))


def saved_names(run_dir: Path) -> set[str]:
    with safe_open(str(run_dir / "weights.safetensors"), framework="pt") as f:
        return set(f.keys())


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.out + cap.err
    return code, cap.out, cap.err


# --------------------------------------------------------------- the adapter folder
@pytest.mark.parametrize("spec", ["lora", "ia3", "prompt:tokens=4", "prefix:tokens=4"])
def test_adapter_folder_loads_with_plain_peft(spec, runs, tiny_bert, table):
    """run/adapter is PEFT's own format: plain transformers + peft, exapt's mean pooling
    and the run's head give the run's logits."""
    from peft import PeftModel
    from transformers import AutoModel

    run = runs(spec)
    folder = run.path / "adapter"
    assert (folder / "adapter_config.json").exists()
    assert json.loads((folder / "adapter_config.json").read_text())["peft_type"] == \
        {"lora": "LORA", "ia3": "IA3", "prompt": "PROMPT_TUNING", "prefix": "PREFIX_TUNING"}[spec.split(":")[0]]
    model = PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_bert), folder).eval()

    bb = run.model.backbone
    assert bb.pooling == "mean"  # the tiny folder is no sentence-transformers folder
    batch = bb.collate(bb.prepare_inputs(table.inputs))  # 60 rows: run.logits batches them as one, too
    with torch.no_grad():
        hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        virtual = model.peft_config["default"].num_virtual_tokens if spec.startswith("prompt") else 0
        assert hidden.shape[1] == batch["input_ids"].shape[1] + virtual
        logits = run.model.head(pool(hidden[:, virtual:], batch["attention_mask"], "mean", bb.normalize))
    ours = run.logits(table)
    assert ours.shape == (60, 3)
    assert (logits - ours).abs().max() < 1e-6
    # the trained adapter matters: the base model alone gives other logits
    base = AutoModel.from_pretrained(tiny_bert).eval()
    with torch.no_grad():
        hidden = base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        plain = run.model.head(pool(hidden, batch["attention_mask"], "mean", bb.normalize))
    assert (plain - ours).abs().max() > 1e-5  # 10x the tolerance above (measured: 8e-4 for ia3, the smallest)


def test_non_peft_strategies_carry_no_adapter_folder(runs):
    for spec in ("adapter:size=8", "bitfit"):
        assert not (runs(spec).path / "adapter").exists()


# --------------------------------------------------------------------------- merge
def _adapter_modules(run, tag: str) -> set[str]:
    """Plain-model names (`encoder.layer.0.attention.self.query`) of the modules carrying `tag` parameters."""
    out = set()
    for n, _ in run.model.named_parameters():
        if tag in n:
            module = n.split(f".{tag}")[0]
            out.add(module.replace("backbone.model.base_model.model.", ""))
    return out


@pytest.mark.parametrize("spec", ["lora", "ia3", "lora:r=4,unfreeze_top=1"])
def test_merge_gives_the_same_logits_with_plain_weights(spec, runs, tiny_bert, table, tmp_path):
    from peft import PeftModel
    from peft.tuners.tuners_utils import BaseTunerLayer

    run = runs(spec)
    state = run.model.state_dict()
    if spec.startswith("lora"):
        tag = "lora_"
        bs = [v for n, v in state.items() if "lora_B" in n]
        assert len(bs) == 4 and all(b.abs().max() > 1e-3 for b in bs), "the LoRA update is trivial"
    else:
        tag = "ia3_"
        ls = [v for n, v in state.items() if "ia3_l" in n]
        assert len(ls) == 8 and all((v - 1).abs().max() > 1e-3 for v in ls), "the IA3 update is trivial"
    modules = _adapter_modules(run, tag)
    before = run.logits(table)

    out = tmp_path / "merged"
    merged = merge_run(run.path, out=out)
    assert merged.path == out
    after = merged.logits(table)
    assert after.dtype == torch.float32
    assert (after - before).abs().max() < 1e-5

    loaded = exapt.load_run(out)
    assert loaded.config.strategy == "full"
    assert not isinstance(loaded.model.backbone.model, PeftModel)
    assert not any(isinstance(m, BaseTunerLayer) for m in loaded.model.modules())
    names = [n for n, _ in loaded.model.named_parameters()]
    assert not any(t in n for n in names for t in ("lora_", "ia3_", "base_layer", "base_model"))
    assert (loaded.logits(table) - before).abs().max() < 1e-5
    assert not (out / "adapter").exists()
    assert not (out / "checkpoint.safetensors").exists()

    # the weights file: exactly the tensors that differ from the base model + the head
    base = load_file(str(tiny_bert / "model.safetensors"))
    params = dict(loaded.model.backbone.model.named_parameters())
    changed = {n for n, v in params.items() if not torch.equal(v.detach(), base[n])}
    assert saved_names(out) == {f"backbone.model.{n}" for n in changed} | {"head.weight", "head.bias"}
    assert merged.metrics["merged_tensors"] == len(changed)
    assert merged.metrics["merged_from"] == str(run.path)
    # ... which are the adapted modules' weights (+ what unfreeze_top trained), nothing else
    adapted = {f"{m}.weight" for m in modules}
    assert adapted <= changed, sorted(adapted - changed)
    allowed = adapted | {f"{m}.bias" for m in modules} if tag == "ia3_" else adapted
    if "unfreeze_top=1" in spec:
        allowed |= {n for n in params if n.startswith("encoder.layer.1.")}
        assert any(n.startswith("encoder.layer.1.intermediate.") for n in changed)
    assert changed <= allowed, sorted(changed - allowed)


def test_merge_through_the_cli(runs, table, tmp_path, capsys):
    run = runs("ia3")
    code, stdout, err = cli(capsys, "merge", run.path, "--out", tmp_path / "m")
    assert code == 0, err
    assert "ia3" in stdout and str(tmp_path / "m") in stdout
    assert (exapt.load_run(tmp_path / "m").logits(table) - run.logits(table)).abs().max() < 1e-5
    # a second merge onto the same folder is refused, --overwrite replaces it
    code, _, err = cli(capsys, "merge", run.path, "--out", tmp_path / "m")
    assert code == 2 and "already holds a complete run" in err and len(err.splitlines()) == 1
    code, _, err = cli(capsys, "merge", run.path, "--out", tmp_path / "m", "--overwrite")
    assert code == 0, err


@pytest.mark.parametrize("spec", ["full", "adapter:size=8"])
def test_merge_refuses_a_run_without_mergeable_updates(spec, runs, tmp_path, capsys):
    run = runs(spec)
    with pytest.raises(ExaptError, match="nothing to merge"):
        merge_run(run.path, out=tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
    code, _, err = cli(capsys, "merge", run.path)
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("exapt: error: ")
    assert not Path(f"{run.path}-merged").exists()


# -------------------------------------------------------------- a different base model
def test_run_on_a_changed_base_model_is_refused(tiny_bert, tweets_small, tmp_path):
    model = tmp_path / "tiny-copy"
    shutil.copytree(tiny_bert, model)
    out = tmp_path / "run"
    exapt.fit(str(tweets_small), "lora", str(model), epochs=1, val_fraction=0, out=out, progress=False, log=quiet)
    _, meta = load_tensors(out / "weights.safetensors")
    assert meta["base_model"]["sha256"] == hashlib.sha256((model / "model.safetensors").read_bytes()).hexdigest()
    exapt.load_run(out)  # fine while the base is the one it was trained on

    tensors = load_file(str(model / "model.safetensors"))
    key = "encoder.layer.0.attention.output.dense.weight"  # a weight LoRA does not touch
    tensors[key] = tensors[key] + 0.01
    save_file(tensors, str(model / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ExaptError) as err:
        exapt.load_run(out)
    message = str(err.value)
    assert "base model" in message and "sha256" in message and "\n" not in message


# ------------------------------------------------------------------ trainable fraction
def test_lora_trainable_fraction_by_hand(runs):
    # tiny BERT: 998,115 parameters with the 3-way head (30522x32 embeddings + 2 layers of 8,544 + 99).
    # LoRA r=8 on PEFT's BERT default targets, query and value (32 -> 32), in both layers:
    # A (r x 32) + B (32 x r) per target.
    r, d_in, d_out, targets, layers, head = 8, 32, 32, 2, 2, 32 * 3 + 3
    lora = layers * targets * r * (d_in + d_out)
    assert lora == 2048
    m = runs("lora").metrics
    assert m["trainable_parameters"] == lora + head
    assert m["total_parameters"] == 1_010_403 + lora
    assert m["trainable_fraction"] == pytest.approx((lora + head) / (1_010_403 + lora), rel=1e-12)


def test_ia3_and_prompt_trainable_parameters_by_hand(runs):
    head = 32 * 3 + 3
    # IA3: key and value scaled on the output side (32 each), attention.output.dense and output.dense
    # (PEFT's feed-forward modules for BERT) on the input side (32 and 64), per layer
    ia3 = 2 * (32 + 32 + 32 + 64)
    assert runs("ia3").metrics["trainable_parameters"] == ia3 + head
    assert runs("prompt:tokens=4").metrics["trainable_parameters"] == 4 * 32 + head


@pytest.mark.parametrize("spec", ["lora", "ia3", "prompt:tokens=4", "prefix:tokens=4", "adapter:size=8", "bitfit"])
def test_every_run_reports_its_trainable_fraction(spec, runs):
    m = json.loads((runs(spec).path / "metrics.json").read_text())
    assert isinstance(m["trainable_parameters"], int) and isinstance(m["total_parameters"], int)
    assert 0 < m["trainable_fraction"] < 0.05  # parameter-efficient: the embeddings alone are 98% of the model
    assert m["trainable_fraction"] == pytest.approx(m["trainable_parameters"] / m["total_parameters"], rel=1e-12)


# --------------------------------------------------------------------- bad options
def expect_error(capsys, argv, *parts, out: Path) -> str:
    code, _, err = cli(capsys, *argv)
    assert code == 2, f"exit {code}; stderr: {err!r}"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("exapt: error: "), err
    for p in parts:
        assert p in lines[0], f"{p!r} not in {lines[0]!r}"
    assert not out.exists(), f"a failed fit left {out} behind"
    return lines[0]


@pytest.mark.parametrize("spec, parts", [
    ("lora:r=0", ["lora:r=0", "r must be >= 1"]),
    ("lora:dropout=1", ["dropout must be in [0, 1)"]),
    ("lora:targets=nonexistent", ["nonexistent", "not found"]),
    ("ia3:targets=nonexistent", ["nonexistent", "not found"]),
    ("adapter:size=0", ["size must be >= 1"]),
    ("prompt:tokens=0", ["tokens must be >= 1"]),
    ("lora:rank=4", ["no option 'rank'"]),
])
def test_bad_options(spec, parts, capsys, tiny_bert, tweets_small, tmp_path):
    out = tmp_path / "run"
    expect_error(capsys, ["fit", tweets_small, "--model", tiny_bert, "--strategy", spec, "--epochs", "1",
                          "--out", out], *parts, out=out)


@pytest.fixture
def numeric_csv(tmp_path):
    f = tmp_path / "nums.csv"
    f.write_text("a,b,label\n" + "".join(f"{i},{i * 2 % 7},{i % 2}\n" for i in range(30)))
    return f


@pytest.mark.parametrize("spec", ["adapter", "adapter:size=4", "lora", "ia3", "prompt", "prefix"])
def test_new_modules_need_a_hugging_face_backbone(spec, capsys, numeric_csv, tmp_path):
    out = tmp_path / "run"
    line = expect_error(capsys, ["fit", numeric_csv, "--features", "a,b", "--model", "mlp:8", "--strategy", spec,
                                 "--epochs", "1", "--out", out], f"--strategy {spec.split(':')[0]}", out=out)
    if not spec.startswith("adapter"):  # adapter: see test_adapter_on_mlp_names_the_real_reason
        assert "needs a Hugging Face backbone" in line and "mlp" in line


# ----------------------------------------------------------------------- known bugs
def test_adapter_on_mlp_names_the_real_reason(capsys, numeric_csv, tmp_path):
    out = tmp_path / "run"
    line = expect_error(capsys, ["fit", numeric_csv, "--features", "a,b", "--model", "mlp:8", "--strategy", "adapter",
                                 "--epochs", "1", "--out", out], "--strategy adapter", out=out)
    assert "needs a Hugging Face backbone" in line and "try lora" not in line


def test_a_misspelt_lora_target_is_refused(capsys, tiny_bert, tweets_small, tmp_path):
    out = tmp_path / "run"
    expect_error(capsys, ["fit", tweets_small, "--model", tiny_bert, "--strategy", "lora:targets=query+valeu",
                          "--epochs", "1", "--out", out], "valeu", out=out)


@pytest.mark.parametrize("spec", ["lora:layer_decay=-0.5", "bitfit:0"])
def test_bad_layer_decay_is_refused(spec, capsys, tiny_bert, tweets_small, tmp_path):
    out = tmp_path / "run"
    expect_error(capsys, ["fit", tweets_small, "--model", tiny_bert, "--strategy", spec, "--epochs", "1",
                          "--out", out], "layer_decay", out=out)


@pytest.mark.parametrize("spec", ["lora", "ia3", "lora:r=4,layer_decay=0.5"])
def test_reported_strategy_parses_back_to_the_same_options(spec):
    from exapt.strategies import parse_strategy

    s = parse_strategy(spec)
    assert parse_strategy(s.spec()) == s


@pytest.mark.parametrize("spec", ["prompt:tokens=4", "prefix:tokens=4"])
def test_virtual_tokens_beyond_the_model_positions(spec, capsys, tiny_bert, tmp_path):
    # 12 rows, 3 of them longer than 128 tokens; the tiny BERT has 512 positions
    args = ["--max-length", "510"]
    long = " ".join(f"word{i}" for i in range(200))
    data = tmp_path / "long.csv"
    data.write_text("text,label\n" + "".join(f"{long if i % 4 == 0 else f'short {i}'},{'abc'[i % 3]}\n"
                                             for i in range(12)))
    out = tmp_path / "run"
    code, _, err = cli(capsys, "fit", data, "--model", tiny_bert, "--strategy", spec, "--epochs", "1", "--out", out, *args)
    # refused up front, naming the fix, with nothing left behind
    assert code == 2, err
    assert len(err.splitlines()) == 1 and not out.exists()
    assert "exceed the model's 512 positions" in err and "--max-length 508" in err
