"""The architectures of the zoo (:mod:`benchmarks.zoo`): randomly initialised, tiny, built offline.

Transformers come from their configs (``transformers`` ships the code; no weights are downloaded); the CNN
families are written here in plain ``torch.nn`` (torchvision needs another torch), block by block as their
papers define them; the recurrent models take their states as inputs and give them back as outputs.

Each :class:`Arch` builds a module that returns a tuple of tensors and makes its inputs for a batch.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

__all__ = ["ARCHS", "Arch"]

Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class Arch:
    """One architecture: how to build it and its inputs.

    Attributes:
        name: short name.
        build: returns the ``torch.nn.Module`` (eval mode, outputs a tuple of tensors).
        inputs: ``(batch, rng) -> {name: array}``, the feeds in export order.
        outputs: output names.
        batch_axes: input name -> its batch axis (0 unless given); state inputs put it elsewhere.
        opsets: opsets to export at (the first with a dynamic batch, the others with a fixed batch of 1).
        script: export a ``torch.jit.script`` of the module (data-dependent control flow becomes ``If``).
    """

    name: str
    build: Callable[[], Any]
    inputs: Callable[[int, np.random.Generator], Feeds]
    outputs: tuple[str, ...]
    batch_axes: tuple[tuple[str, int], ...] = ()
    opsets: tuple[int, ...] = (17, 13)
    script: bool = False


def _tok(vocab: int, seq: int = 16, mask: bool = True, types: bool = False) -> Callable[[int, Any], Feeds]:
    def make(n: int, rng: np.random.Generator) -> Feeds:
        out = {"input_ids": rng.integers(3, vocab, (n, seq)).astype(np.int64)}
        if mask:
            m = np.ones((n, seq), np.int64)
            for i in range(n):  # a few padded positions at the end of some rows
                m[i, seq - int(rng.integers(0, seq // 4 + 1)) :] = 0
            m[:, 0] = 1
            out["attention_mask"] = m
        if types:
            out["token_type_ids"] = np.zeros((n, seq), np.int64)
        return out

    return make


def _img(c: int = 3, size: int = 64, name: str = "pixel_values") -> Callable[[int, Any], Feeds]:
    return lambda n, rng: {name: rng.standard_normal((n, c, size, size)).astype(np.float32)}


def _audio(length: int = 4000) -> Callable[[int, Any], Feeds]:
    return lambda n, rng: {"input_values": (rng.standard_normal((n, length)) * 0.3).astype(np.float32)}


class _Wrap:
    """Module factory: a transformers model called with keyword inputs, returning the listed outputs."""

    @staticmethod
    def hf(make: Callable[[], Any], names: tuple[str, ...], fields: tuple[str, ...]) -> Callable[[], Any]:
        def build() -> Any:
            import torch

            class M(torch.nn.Module):
                def __init__(self) -> None:
                    super().__init__()
                    self.m = make()

                def forward(self, *args: Any) -> Any:
                    out = self.m(**dict(zip(names, args, strict=True)), return_dict=True)
                    return tuple(out[f] for f in fields)

            torch.manual_seed(0)
            return M().eval()

        return build


def _hf(config_cls: str, model_cls: str, **cfg: Any) -> Callable[[], Any]:
    def make() -> Any:
        import transformers

        config = getattr(transformers, config_cls)(**cfg)
        with contextlib.suppress(AttributeError):  # older configs
            config._attn_implementation = "eager"
        return getattr(transformers, model_cls)(config)

    return make


_TXT = {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 256}
_V = 2000


def _text(name: str, cfg: str, cls: str, types: bool = False, mask: bool = True, **kw: Any) -> Arch:
    names = ("input_ids", "attention_mask", "token_type_ids")[: 1 + mask + types] if mask else ("input_ids",)
    return Arch(
        name,
        _Wrap.hf(_hf(cfg, cls, **kw), names, ("last_hidden_state",)),
        _tok(_V, mask=mask, types=types),
        ("last_hidden_state",),
    )


def _vision(name: str, cfg: str, cls: str, size: int = 64, field: str = "last_hidden_state", **kw: Any) -> Arch:
    return Arch(name, _Wrap.hf(_hf(cfg, cls, **kw), ("pixel_values",), (field,)), _img(size=size), (field,))


def _transformers() -> list[Arch]:
    small_vit = {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 256}
    return [
        _text("bert", "BertConfig", "BertModel", types=True, vocab_size=_V, **_TXT),
        _text(
            "distilbert",
            "DistilBertConfig",
            "DistilBertModel",
            vocab_size=_V,
            dim=128,
            n_layers=2,
            n_heads=4,
            hidden_dim=256,
        ),
        _text("roberta", "RobertaConfig", "RobertaModel", vocab_size=_V, **_TXT),
        _text("albert", "AlbertConfig", "AlbertModel", vocab_size=_V, embedding_size=64, **_TXT),
        _text("electra", "ElectraConfig", "ElectraModel", vocab_size=_V, embedding_size=64, **_TXT),
        _text("deberta-v2", "DebertaV2Config", "DebertaV2Model", vocab_size=_V, **_TXT),
        _text("gpt2", "GPT2Config", "GPT2Model", vocab_size=_V, n_embd=128, n_layer=2, n_head=4, n_positions=64),
        _text(
            "opt",
            "OPTConfig",
            "OPTModel",
            vocab_size=_V,
            hidden_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            ffn_dim=256,
            word_embed_proj_dim=128,
            max_position_embeddings=64,
        ),
        _text("llama", "LlamaConfig", "LlamaModel", vocab_size=_V, num_key_value_heads=2, **_TXT),
        _text(
            "t5-encoder",
            "T5Config",
            "T5EncoderModel",
            vocab_size=_V,
            d_model=128,
            d_ff=256,
            num_layers=2,
            num_heads=4,
            d_kv=32,
        ),
        _text(
            "bart-encoder",
            "BartConfig",
            "BartModel",
            vocab_size=_V,
            d_model=128,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=256,
            decoder_ffn_dim=256,
            max_position_embeddings=64,
        ),
        _text("clip-text", "CLIPTextConfig", "CLIPTextModel", vocab_size=_V, max_position_embeddings=32, **_TXT),
        Arch(
            "whisper-encoder",
            _Wrap.hf(
                _hf(
                    "WhisperConfig",
                    "WhisperModel",
                    vocab_size=_V,
                    d_model=128,
                    encoder_layers=2,
                    decoder_layers=1,
                    encoder_attention_heads=4,
                    decoder_attention_heads=4,
                    encoder_ffn_dim=256,
                    decoder_ffn_dim=256,
                    num_mel_bins=40,
                    max_source_positions=50,
                    max_target_positions=16,
                    pad_token_id=1,
                    bos_token_id=0,
                    eos_token_id=2,
                    decoder_start_token_id=0,
                ),
                ("input_features", "decoder_input_ids"),
                ("encoder_last_hidden_state", "last_hidden_state"),
            ),
            lambda n, rng: {
                "input_features": rng.standard_normal((n, 40, 100)).astype(np.float32),
                "decoder_input_ids": rng.integers(3, _V, (n, 4)).astype(np.int64),
            },
            ("encoder_last_hidden_state", "last_hidden_state"),
        ),
        Arch(
            "wav2vec2",
            _Wrap.hf(
                _hf(
                    "Wav2Vec2Config",
                    "Wav2Vec2Model",
                    conv_dim=(64, 64),
                    conv_stride=(5, 4),
                    conv_kernel=(10, 4),
                    num_conv_pos_embeddings=16,
                    num_conv_pos_embedding_groups=4,
                    **_TXT,
                ),
                ("input_values",),
                ("last_hidden_state",),
            ),
            _audio(),
            ("last_hidden_state",),
        ),
        Arch(
            "hubert",
            _Wrap.hf(
                _hf(
                    "HubertConfig",
                    "HubertModel",
                    conv_dim=(64, 64),
                    conv_stride=(5, 4),
                    conv_kernel=(10, 4),
                    num_conv_pos_embeddings=16,
                    num_conv_pos_embedding_groups=4,
                    **_TXT,
                ),
                ("input_values",),
                ("last_hidden_state",),
            ),
            _audio(),
            ("last_hidden_state",),
        ),
        _vision("vit", "ViTConfig", "ViTModel", image_size=64, patch_size=16, **small_vit),
        _vision("deit", "DeiTConfig", "DeiTModel", image_size=64, patch_size=16, **small_vit),
        _vision(
            "swin",
            "SwinConfig",
            "SwinModel",
            image_size=64,
            patch_size=4,
            embed_dim=32,
            depths=(2, 2),
            num_heads=(2, 4),
            window_size=4,
        ),
        _vision(
            "convnext",
            "ConvNextConfig",
            "ConvNextModel",
            hidden_sizes=(32, 64, 128, 256),
            depths=(1, 1, 2, 1),
            field="pooler_output",
        ),
        _vision(
            "mobilevit",
            "MobileViTConfig",
            "MobileViTModel",
            image_size=64,
            hidden_sizes=(64, 80, 96),
            neck_hidden_sizes=(16, 24, 48, 64, 80, 96, 384),
            field="pooler_output",
        ),
        _vision(
            "segformer",
            "SegformerConfig",
            "SegformerModel",
            hidden_sizes=(32, 64, 96, 128),
            num_attention_heads=(1, 2, 4, 4),
            depths=(1, 1, 1, 1),
            decoder_hidden_size=128,
        ),
        _vision(
            "clip-vision",
            "CLIPVisionConfig",
            "CLIPVisionModel",
            image_size=64,
            patch_size=16,
            field="pooler_output",
            **small_vit,
        ),
    ]


def _cnns() -> list[Arch]:
    import zoo_nets as n  # torch only when the zoo builds

    img = _img(size=64, name="image")
    return [
        Arch("resnet", n.resnet, img, ("logits",)),
        Arch("mobilenet-v2", n.mobilenet_v2, img, ("logits",)),
        Arch("mobilenet-v3", n.mobilenet_v3, img, ("logits",), opsets=(17, 13, 21)),
        Arch("efficientnet", n.efficientnet, img, ("logits",)),
        Arch("shufflenet", n.shufflenet, img, ("logits",), opsets=(17, 11)),
        Arch("squeezenet", n.squeezenet, img, ("logits",), opsets=(17, 11)),
        Arch("densenet", n.densenet, img, ("logits",)),
        Arch("inception", n.inception, img, ("logits",)),
        Arch("regnet", n.regnet, img, ("logits",)),
        Arch("deeplab-head", n.deeplab, img, ("masks",)),
        Arch(
            "lstm-text",
            n.lstm_text,
            lambda b, rng: {
                "ids": rng.integers(0, 1000, (b, 20)).astype(np.int64),
                "h": (rng.standard_normal((2, b, 128)) * 0.5).astype(np.float32),
                "c": (rng.standard_normal((2, b, 128)) * 0.5).astype(np.float32),
            },
            ("logits", "hn", "cn"),
            batch_axes=(("h", 1), ("c", 1)),
        ),
        Arch(
            "gru-audio",
            n.gru_audio,
            lambda b, rng: {
                "features": rng.standard_normal((b, 30, 40)).astype(np.float32),
                "h": (rng.standard_normal((2, b, 128)) * 0.5).astype(np.float32),
            },
            ("frames", "hn"),
            batch_axes=(("h", 1),),
        ),
        Arch(
            "vad-if",
            n.vad,
            lambda b, rng: {
                "input": (rng.standard_normal((b, 512)) * 0.3).astype(np.float32),
                "state": (rng.standard_normal((2, b, 128)) * 0.5).astype(np.float32),
                "sr": np.array(16000 if rng.random() < 0.5 else 8000, np.int64),
            },
            ("prob", "stateN"),
            batch_axes=(("state", 1), ("sr", -1)),
            script=True,
        ),
    ]


def all_archs() -> list[Arch]:
    """Every architecture of the zoo."""
    return _transformers() + _cnns()


ARCHS = all_archs
