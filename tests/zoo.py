"""The coverage zoo: small random-weight models built from library code (Hugging Face
`transformers` classes) and common vision blocks, each exported with dynamic dims the way a user
would. No downloads: every model is built from a config. Used by bench/coverage.py and the tests.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.export import Dim

Built = tuple[nn.Module, tuple[torch.Tensor, ...], dict[str, Any]]  # model, example args, dynamic shapes


class TextEncoder(nn.Module):
    """A BERT-style encoder as exported for serving: token ids and mask in, hidden states out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        return out.last_hidden_state, out.pooler_output


class Decoder(nn.Module):
    """A GPT-2-style decoder without its key/value cache."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, use_cache=False, return_dict=True).last_hidden_state


class Vision(nn.Module):
    """A vision model returning one of its outputs."""

    def __init__(self, model: nn.Module, key: str = "last_hidden_state") -> None:
        super().__init__()
        self.model, self.key = model, key

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values, return_dict=True)[self.key]


def _batch() -> Dim:
    return Dim("batch", min=1, max=8)


def _token_dims() -> dict[int, Dim]:
    """Dynamic batch and sequence length (shared by every input that carries tokens)."""
    return {0: _batch(), 1: Dim("seq", min=2, max=64)}


def _images(model: nn.Module) -> Built:
    """A vision model taking `pixel_values` of 3x32x32 images, with a dynamic batch."""
    return model, (torch.randn(2, 3, 32, 32),), {"pixel_values": {0: _batch()}}


def bert() -> Built:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=1000,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=64,
    )
    model = TextEncoder(BertModel(cfg).eval())
    ids = torch.randint(0, 1000, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.long)
    dims = _token_dims()
    return model, (ids, mask), {"input_ids": dims, "attention_mask": dims}


def gpt2() -> Built:
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=1000, n_embd=64, n_layer=2, n_head=4, n_positions=64)
    model = Decoder(GPT2Model(cfg).eval())
    return model, (torch.randint(0, 1000, (2, 16)),), {"input_ids": _token_dims()}


def vit() -> Built:
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    cfg = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
    )
    return _images(Vision(ViTModel(cfg, add_pooling_layer=False).eval()))


def swin() -> Built:
    """A shifted-window transformer classifier: torch.onnx's dynamo exporter cannot decompose it."""
    from transformers import SwinConfig, SwinForImageClassification

    torch.manual_seed(0)
    cfg = SwinConfig(
        image_size=32,
        patch_size=4,
        embed_dim=16,
        depths=[1, 1],
        num_heads=[2, 2],
        window_size=2,
        num_labels=5,
    )
    return _images(Vision(SwinForImageClassification(cfg).eval(), "logits"))


def resnet() -> Built:
    from transformers import ResNetConfig, ResNetModel

    torch.manual_seed(0)
    cfg = ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic")
    return _images(Vision(ResNetModel(cfg).eval(), "pooler_output"))


def mobilenet_v2() -> Built:
    from transformers import MobileNetV2Config, MobileNetV2Model

    torch.manual_seed(0)
    cfg = MobileNetV2Config(image_size=32, depth_multiplier=0.35)
    return _images(Vision(MobileNetV2Model(cfg).eval(), "pooler_output"))


class _SqueezeExcite(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, c // 4, 1), nn.Conv2d(c // 4, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * nn.functional.hardsigmoid(self.fc2(nn.functional.relu(self.fc1(s))))


class MobileNetV3Block(nn.Module):
    """MobileNetV3-like: expand 1x1, depthwise 3x3, squeeze-excite, hard-swish, project, residual."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.Hardswish())
        self.expand = nn.Sequential(nn.Conv2d(16, 48, 1), nn.BatchNorm2d(48), nn.Hardswish())
        self.depthwise = nn.Sequential(
            nn.Conv2d(48, 48, 3, 1, 1, groups=48), nn.BatchNorm2d(48), nn.Hardswish()
        )
        self.se = _SqueezeExcite(48)
        self.project = nn.Sequential(nn.Conv2d(48, 16, 1), nn.BatchNorm2d(16))
        self.grouped = nn.Conv2d(16, 32, 3, 1, 1, groups=4)
        self.head = nn.Linear(32, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.stem(image)
        x = x + self.project(self.se(self.depthwise(self.expand(x))))
        x = nn.functional.hardswish(self.grouped(x))
        return self.head(x.mean((2, 3)))


def mobilenet_v3() -> Built:
    torch.manual_seed(0)
    m = MobileNetV3Block().eval()
    for mod in m.modules():  # non-trivial batch-norm statistics
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 1.5)
    return m, (torch.randn(2, 3, 32, 32),), {"image": {0: _batch()}}


def gelu_mlp() -> Built:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 10)).eval()
    return m, (torch.randn(2, 32),), {"input": {0: _batch()}}


ZOO: dict[str, Callable[[], Built]] = {
    "bert": bert,
    "gpt2": gpt2,
    "vit": vit,
    "resnet": resnet,
    "mobilenet_v2": mobilenet_v2,
    "mobilenet_v3": mobilenet_v3,
    "gelu_mlp": gelu_mlp,
    "swin": swin,
}


def save(name: str, path: Path) -> Path:
    """Export zoo model `name` with its dynamic dims and save it at `path`."""
    model, args, dynamic = ZOO[name]()
    program = torch.export.export(model, args, dynamic_shapes=dynamic)
    torch.export.save(program, str(path))
    return path
