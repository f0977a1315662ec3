"""Small models the tests export, each saved with torch.export.save."""

from __future__ import annotations

from pathlib import Path

import onnx
import torch
from torch import nn

from examples.make_examples import ConvNet


class MultiIO(nn.Module):
    """Two inputs sharing a dynamic batch, two outputs of different shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.encode = nn.Linear(12, 16)
        self.head_a = nn.Linear(16, 4)
        self.head_b = nn.Linear(16, 2)

    def forward(self, features: torch.Tensor, extra: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = torch.tanh(self.encode(torch.cat([features, extra], dim=1)))
        return self.head_a(hidden), torch.sigmoid(self.head_b(hidden)) * 2.0


def save_convnet(path: Path, max_batch: int = 16) -> Path:
    torch.manual_seed(0)
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    program = torch.export.export(
        ConvNet().eval(), (torch.randn(2, 3, 32, 32),), dynamic_shapes={"image": {0: batch}}
    )
    torch.export.save(program, str(path))
    return path


def save_multi_io(path: Path, seed: int = 1) -> Path:
    torch.manual_seed(seed)
    batch = torch.export.Dim("batch", min=1, max=8)
    program = torch.export.export(
        MultiIO().eval(),
        (torch.randn(3, 8), torch.randn(3, 4)),
        dynamic_shapes={"features": {0: batch}, "extra": {0: batch}},
    )
    torch.export.save(program, str(path))
    return path


class MLP(nn.Module):
    """Large linear layers: the int4 proof model (about 1.6 M weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class EncoderBlock(nn.Module):
    """One transformer encoder layer: attention, layernorm, exact (erf) GELU."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(
            d_model=32, nhead=4, dim_feedforward=64, activation="gelu", batch_first=True, dropout=0.0
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.layer(tokens)


def save_mlp(path: Path) -> Path:
    torch.manual_seed(2)
    batch = torch.export.Dim("batch", min=1, max=8)
    program = torch.export.export(MLP().eval(), (torch.randn(2, 512),), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, str(path))
    return path


def save_encoder(path: Path) -> Path:
    torch.manual_seed(3)
    batch = torch.export.Dim("batch", min=1, max=8)
    program = torch.export.export(
        EncoderBlock().eval(), (torch.randn(2, 8, 32),), dynamic_shapes={"tokens": {0: batch}}
    )
    torch.export.save(program, str(path))
    return path


def save_convnet_onnx(source: Path, path: Path) -> Path:
    """The conv net (its torch.export archive) as a user's ONNX file, the batch dim named `N`."""
    program = torch.export.load(str(source))
    exported = torch.onnx.export(
        program, dynamo=True, input_names=["image"], output_names=["logits"], external_data=False
    )
    assert exported is not None
    model = exported.model_proto
    for value in [*model.graph.input, *model.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    onnx.save(model, str(path))
    return path


def save_keras_cnn(path: Path) -> Path:
    """A Keras CNN, channels-last, dynamic batch: conv, depthwise conv, batch norm, exact GELU."""
    import keras

    keras.utils.set_random_seed(4)
    image = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Conv2D(8, 3, activation="relu")(image)
    x = keras.layers.DepthwiseConv2D(3)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(16, activation="gelu")(x)
    keras.Model(image, keras.layers.Dense(10, name="logits")(x)).save(path)
    return path


def save_keras_mlp(path: Path) -> Path:
    """A Keras MLP over 24 features with LayerNorm and softmax."""
    import keras

    keras.utils.set_random_seed(5)
    features = keras.Input((24,), name="features")
    x = keras.layers.Dense(64, activation="relu")(features)
    x = keras.layers.LayerNormalization()(x)
    x = keras.layers.Dense(5)(x)
    keras.Model(features, keras.layers.Softmax(name="probs")(x)).save(path)
    return path


def save_keras_lambda(path: Path) -> Path:
    """A .keras whose Lambda layer creates the file named by $LAMBDA_MARKER whenever it runs."""
    import keras

    payload = keras.layers.Lambda(
        lambda x: (
            __import__("os").environ.get("LAMBDA_MARKER")
            and open(__import__("os").environ["LAMBDA_MARKER"], "w").close(),
            x,
        )[1]
    )
    features = keras.Input((4,), name="features")
    keras.Model(features, keras.layers.Dense(2)(payload(features))).save(path)
    return path


def save_saved_model(folder: Path) -> Path:
    """A Keras MLP exported as a TensorFlow SavedModel folder (`serving_default`, input `features`)."""
    import keras

    model = keras.saving.load_model(save_keras_mlp(folder.with_suffix(".keras")))
    model.export(str(folder), format="tf_saved_model", verbose=False)
    return folder


def save_writing_saved_model(folder: Path, marker: Path) -> Path:
    """A SavedModel whose serving function writes `marker` whenever it runs."""
    import tensorflow as tf

    class Writer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            tf.io.write_file(str(marker), "the graph ran")
            return {"y": x * 2.0}

    module = Writer()
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})
    return folder
