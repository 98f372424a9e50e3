"""Assemble docs/benchmarks.md from the latest results/*.md (run after the benchmarks)."""
import json
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SECTIONS = [
    ("accuracy_tweets.md", "Accuracy on the fixed tweet splits (issue 2)",
     "python benchmarks/accuracy_tweets.py",
     "exapt `linear-probe`, `full` and `lp-ft` next to the standard tools, on the same training files and the same "
     "1,500-tweet test set, 64 tokens, every training example used (no validation split), in one run. Seconds are "
     "wall time per fit as measured during the run (the machine was shared with other work for part of it: read them "
     "as rough; the speed targets below were measured alone)."),
    ("speed.md", "Training speed (issues 2 and 25)", "python benchmarks/speed.py",
     "Measured alone on the 2-core machine, side by side with the peer in one run; MFU against the fp32 matmul "
     "peak measured in the same run. Where the time goes (profile) and the levers taken: docs/speed.md."),
    ("profile.md", "Where training time goes (issue 25)", "python benchmarks/profile_train.py",
     "exapt's own loop under torch.profiler, each op's own time put in one bucket (batch 32, MiniLM-L6; "
     "pretrain-tiny: batch 64 x 128 tokens), with every lever of docs/speed.md kept. The profile before the "
     "levers and what each lever changed: docs/speed.md."),
    ("peft.md", "Parameter-efficient strategies (issue 3)", "python benchmarks/peft_bench.py",
     "LoRA, bottleneck adapters and IA3 against full fine-tuning; memory and throughput against PEFT + Trainer."),
    ("compare.md", "`exapt compare` (issue 4)", "python benchmarks/compare_bench.py",
     "Wall time of one compare panel against the same cells run one by one with `exapt fit` (measured alone), and "
     "the strategy compare recommends on the fixed tweet splits against the best peer of ../shared/peers/RESULTS.md."),
    ("rank.md", "`exapt rank` (issue 7)", "python benchmarks/rank_bench.py",
     "Transferability scores of MiniLM's layers 1-6, its scratch twin and two encoders exapt pre-trained on the "
     "tweets, against the accuracy each reaches when fine-tuned; the cost of ranking against fine-tuning all."),
    ("rank-n256.md", "`exapt rank` at 256 tweets per class (issue 7)", "python benchmarks/rank_bench.py --size 256",
     "The same candidates scored and fine-tuned on the 768 tweets of train_n256_s{seed}.csv: more examples than "
     "MiniLM's 384 feature dimensions, the regime LogME's evidence is meant for."),
    ("rank-full.md", "`exapt rank` against full fine-tuning (issue 7)",
     "python benchmarks/rank_bench.py --strategies full --output benchmarks/results/rank-full.json",
     "The same candidates at 64 tweets per class, validated against full fine-tuning (as the LogME paper does) "
     "instead of LP-FT."),
    ("shift.md", "`exapt shift` (issue 6)", "python benchmarks/shift_bench.py",
     "Covariate, label and concept shift on MNIST -> optdigits, random-split controls and the airline -> "
     "self-driving tweets; see docs/shift.md."),
    ("adapt.md", "Adaptation across a domain shift (issue 6)", "python benchmarks/adapt_bench.py",
     "`fit --adapt-to` with each penalty against source-only training, no target label used; see "
     "docs/adaptation.md."),
    ("pretrain.md", "`exapt pretrain` throughput (issue 8)", "python benchmarks/pretrain_bench.py",
     "Masked-LM pre-training against the Hugging Face Trainer with DataCollatorForLanguageModeling: same BERT "
     "architecture, same E. coli windows, same batch, one process, measured alone."),
    ("pretrain_flagship_ecoli-tiny-6mer.md", "E. coli-pretrained DNA encoder -> splice junctions, promoters (issue 8)",
     "python benchmarks/pretrain_flagship.py",
     "A tiny BERT (0.9 M parameters + 6-mer embeddings) pre-trained on the E. coli genome, fine-tuned against its "
     "scratch twin; see docs/pretrain.md."),
    ("pretrain_flagship_antiberty.md", "AntiBERTy -> antimicrobial peptides (issue 8)",
     "python benchmarks/pretrain_flagship.py --model antiberty --data amp-tm,amp-uniprot --lr default "
     "--strategies linear-probe", "A linear probe on AntiBERTy's frozen features."),
    ("pretrain_flagship_uniprot-tiny.md", "UniProt-pretrained tiny protein encoder -> antimicrobial peptides (issue 8)",
     "python benchmarks/pretrain_flagship.py --model benchmarks/results/models/uniprot-tiny --data amp-tm,amp-uniprot",
     "A tiny BERT pre-trained on 20,000 UniProt proteins against its scratch twin."),
    ("long_inputs.md", "Long inputs: `--long chunk` vs truncation on 16S rRNA genes (issue 22)",
     "python benchmarks/long_inputs_bench.py --model DNA_TINY --max-test 300",
     "A tiny DNA encoder exapt pre-trained on the E. coli genome (128-token windows), read by a linear probe on "
     "16S rRNA genes of 1,205-1,655 bases; see docs/long-inputs.md."),
]


def main() -> None:
    parts = ["# Benchmarks", "", "Every figure here is produced by a script in `benchmarks/` (`make bench` runs them "
             "all, one after another) and can be reproduced on the same kind of machine (2 CPU cores, torch 2.13 CPU).", ""]
    machine = None
    for name in ("peft.json", "speed.json"):
        f = RESULTS / name
        if f.exists():
            machine = json.loads(f.read_text()).get("machine")
    if machine:
        parts += [f"Machine: {machine}", ""]
    for fname, title, cmd, text in SECTIONS:
        f = RESULTS / fname
        if not f.exists():
            continue
        # a result file's own headings sit below its section's
        body = re.sub(r"^(#+) ", lambda m: "#" * (len(m[1]) + 2) + " ", f.read_text().strip(), flags=re.M)
        parts += [f"## {title}", "", text, "", f"```bash\n{cmd}\n```", "", body, ""]
    (HERE.parent / "docs" / "benchmarks.md").write_text("\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
