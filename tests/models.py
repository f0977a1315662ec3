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


def save_keras_sequential(path: Path) -> Path:
    """The simplest Keras model: a Sequential CNN classifier."""
    import keras

    keras.utils.set_random_seed(6)
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            layers.Conv2D(4, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(5, activation="softmax"),
        ]
    )
    model.save(path)
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


def save_tf1_main_op_saver(folder: Path, prefix: Path, use_own_saver: bool = False) -> Path:
    """A TF1 SavedModel whose main op (run by the loader) saves a checkpoint to `prefix`, or, with
    `use_own_saver`, runs the model's own saver's save tensor (its default filename: `model`)."""
    import tensorflow as tf

    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default(), tf1.Session(graph=graph) as sess:
        x = tf1.placeholder(tf.float32, [None, 3], name="x")
        v = tf1.get_variable("v", initializer=tf.ones([3]))
        y = tf.identity(x * v, name="y")
        sess.run(tf1.global_variables_initializer())
        if use_own_saver:
            saver = tf1.train.Saver(sharded=True)
            main_op = tf.group(graph.get_tensor_by_name(saver.saver_def.save_tensor_name))
        else:
            saver = None
            main_op = tf.raw_ops.SaveV2(
                prefix=tf.constant(str(prefix)),
                tensor_names=["v"],
                shape_and_slices=[""],
                tensors=[v.read_value()],
            )
        builder = tf1.saved_model.Builder(str(folder))
        builder.add_meta_graph_and_variables(
            sess,
            [tf1.saved_model.tag_constants.SERVING],
            signature_def_map={"serving_default": tf1.saved_model.predict_signature_def({"x": x}, {"y": y})},
            main_op=main_op,
            saver=saver,
        )
        builder.save()
    return folder


def save_disguised_saver_call(folder: Path, prefix: Path) -> Path:
    """A TF2 SavedModel whose serving function calls a function renamed like TensorFlow's own saver
    (`__inference__traced_save_...`) that writes a checkpoint to `prefix` whenever it runs."""
    import tensorflow as tf
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    class Writer(tf.Module):
        def __init__(self) -> None:
            self.v = tf.Variable(tf.ones([3]))

        @tf.function
        def write(self) -> tf.Tensor:
            save = tf.raw_ops.SaveV2(
                prefix=str(prefix), tensor_names=["v"], shape_and_slices=[""], tensors=[self.v.read_value()]
            )
            with tf.control_dependencies([save]):
                return tf.constant(1.0) + 0.0

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": x * self.v * self.write()}

    module = Writer()
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})
    path = folder / "saved_model.pb"
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString(path.read_bytes())
    text = text_format.MessageToString(proto)
    for function in proto.meta_graphs[0].graph_def.library.function:
        name = function.signature.name
        if name.startswith("__inference_write_"):  # every mention: the function, its calls, the object graph
            disguised = name.replace("__inference_write_", "__inference__traced_save_")
            text = text.replace(f'"{name}"', f'"{disguised}"')
    path.write_bytes(text_format.Parse(text, saved_model_pb2.SavedModel()).SerializeToString())
    return folder


def save_file_reading_program(path: Path, secret: Path) -> Path:
    """A hand-edited torch.export archive: its constant becomes `aten.from_file(secret)`, which
    torch.export.load accepts and which reads that file into the outputs when the program runs."""

    class AddsConstant(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + torch.zeros(4)

    program = torch.export.export(AddsConstant(), (torch.ones(4),))
    for node in program.graph.nodes:
        if node.target is torch.ops.aten.zeros.default:
            node.target = torch.ops.aten.from_file.default
            node.args = (str(secret),)
            node.kwargs = {"shared": False, "size": 4, "dtype": torch.float32}
    program.graph_module.recompile()
    torch.export.save(program, str(path))
    return path


def save_expander(path: Path) -> Path:
    """Four numbers in, each broadcast to a 1000x1000 plane out: a million times its input."""

    class Expands(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :, None, None].expand(-1, -1, 1000, 1000) * 2

    batch = torch.export.Dim("batch", min=1, max=8)
    program = torch.export.export(Expands(), (torch.ones(2, 4),), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, str(path))
    return path
