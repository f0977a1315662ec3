"""Triton config.pbtxt: built through the ModelConfig protobuf, checked against the ONNX graph."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from google.protobuf import text_format
from onnx import TensorProto, helper
from tritonclient.grpc import model_config_pb2 as mc

from exporters.onnx2triton import TritonOptions, build_config, write_repository
from shipyard.errors import ValidationMismatch
from shipyard.signature import DynamicDim, Signature, TensorSpec
from targets.triton import check_config


def _signature(batch_min: int = 1) -> Signature:
    return Signature(
        inputs=[
            TensorSpec(name="x", dtype="float32", shape=["batch", 4]),
            TensorSpec(name="ids", dtype="int64", shape=["batch", "x_dim1"]),
        ],
        outputs=[TensorSpec(name="y", dtype="float32", shape=["batch", 2])],
        dims={
            "batch": DynamicDim(name="batch", min=batch_min, max=8, typical=4),
            "x_dim1": DynamicDim(name="x_dim1", min=1, max=5, typical=2),
        },
    )


def _onnx(path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "x_dim1"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])
    node = helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["y"])
    inits = [
        helper.make_tensor(n, TensorProto.INT64, [1], [v])
        for n, v in (("starts", 0), ("ends", 2), ("axes", 1))
    ]
    graph = helper.make_graph([node], "g", [x, ids], [y], initializer=inits)
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_batched_config(tmp_path: Path) -> None:
    config = build_config("m", _signature(), TritonOptions(max_queue_delay_us=250))
    assert config.max_batch_size == 8
    assert config.dynamic_batching.max_queue_delay_microseconds == 250
    assert [list(t.dims) for t in config.input] == [[4], [-1]]
    assert [mc.DataType.Name(t.data_type) for t in config.input] == ["TYPE_FP32", "TYPE_INT64"]
    assert list(config.output[0].dims) == [2]


def test_unbatched_when_batch_cannot_be_one() -> None:
    config = build_config("m", _signature(batch_min=2), TritonOptions())
    assert config.max_batch_size == 0
    assert not config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == [-1, 4]


def test_repository_round_trips_and_matches_graph(tmp_path: Path) -> None:
    onnx_path = _onnx(tmp_path / "src.onnx")
    write_repository(onnx_path, tmp_path / "repo", "m", _signature(), TritonOptions())
    parsed = check_config(tmp_path / "repo" / "m")
    assert parsed.name == "m" and parsed.max_batch_size == 8


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.input[0].dims.__setitem__(0, 5), "x: config dims [5], graph [4]"),
        (lambda c: setattr(c.input[1], "data_type", mc.TYPE_INT32), "ids: config TYPE_INT32, graph int64"),
        (lambda c: setattr(c.output[0], "name", "z"), "differ from graph"),
        (lambda c: setattr(c, "name", "other"), "differs from folder"),
    ],
)
def test_config_mismatch_is_caught(tmp_path: Path, edit, message: str) -> None:
    onnx_path = _onnx(tmp_path / "src.onnx")
    write_repository(onnx_path, tmp_path / "repo", "m", _signature(), TritonOptions())
    path = tmp_path / "repo/m/config.pbtxt"
    config = text_format.Parse(path.read_text(), mc.ModelConfig())
    edit(config)
    path.write_text(text_format.MessageToString(config))
    with pytest.raises(ValidationMismatch, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_config(tmp_path / "repo" / "m")
