"""The op check of a SavedModel: nothing that touches files or runs Python, outside its real saver.

Read as protobuf before TensorFlow loads anything. Every graph node and every library function
is checked, not only what the serving signature reaches: loading also runs the main and init
ops, table initializers and the restore op, and any function may be called from those.

TensorFlow's own checkpoint machinery lives in every SavedModel that has variables: the
`saver_def` names a save tensor and a restore op, fed by a filename tensor that the loader sets
to the model's own `variables/variables` path. Checkpoint ops (SaveV2, RestoreV2, ...) are
allowed only there:

- in the graph nodes that the save tensor and the restore op depend on (the saver), and in the
  functions only those nodes call (TF2's `__inference__traced_save/restore`, whatever their
  names: a name is the uploader's choice, a call is not);
- nowhere else reachable: a node outside the saver that depends on a saver node (a main op
  that runs the saver's save with its default filename) refuses the model;
- with every path they read or write made from the filename tensor, optionally joined with
  constant suffixes that hold no `..` (the `_temp/part` shards of a save).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shipyard.errors import SourceError

__all__ = ["CHECKPOINT_OPS", "UNSAFE_OPS", "check_ops", "unsafe_ops"]

# Ops that read or write files, list folders, or call back into Python: a serving graph has no
# business with them, and running one would run what the upload says.
UNSAFE_OPS = frozenset(
    {
        "ReadFile", "WriteFile", "MatchingFiles", "MatchingFilesDataset", "Save", "SaveV2",
        "SaveSlices", "Restore", "RestoreV2", "RestoreSlice", "MergeV2Checkpoints", "PyFunc",
        "PyFuncStateless", "EagerPyFunc", "ImmutableConst", "FixedLengthRecordDataset",
        "FixedLengthRecordDatasetV2", "TFRecordDataset", "TFRecordDatasetV2", "TextLineDataset",
        "ExperimentalLMDBDataset", "LMDBDataset", "ExperimentalSqlDataset", "SqlDataset",
        "WholeFileReader", "WholeFileReaderV2", "TextLineReader", "TextLineReaderV2",
        "FixedLengthRecordReader", "FixedLengthRecordReaderV2", "TFRecordReader", "TFRecordReaderV2",
        "LoadAndRemapMatrix", "DebugIdentityV2", "DebugIdentityV3", "SummaryWriter",
        "CreateSummaryFileWriter", "WriteSummary", "WriteRawProtoSummary", "DatasetToTFRecord",
        "ExperimentalDatasetToTFRecord", "SaveDataset", "SaveDatasetV2", "LoadDataset",
        "ExperimentalSaveDataset", "Print", "PrintV2", "InitializeTableFromTextFile",
        "InitializeTableFromTextFileV2", "CacheDataset", "CacheDatasetV2", "SnapshotDataset",
        "SnapshotDatasetV2", "CSVDataset", "CSVDatasetV2", "ExperimentalCSVDataset",
        "ExperimentalMatchingFilesDataset", "RecordInput", "DebugIdentity", "CreateSummaryDbWriter",
        "DecodeProtoV2", "GenerateVocabRemapping", "DatasetFromGraph", "FileSystemSetConfiguration",
    }
)  # fmt: skip
# The checkpoint ops, by the positions of their inputs that name files.
_PATH_INPUTS = {
    "SaveV2": (0,),
    "RestoreV2": (0,),
    "Save": (0,),
    "SaveSlices": (0,),
    "Restore": (0,),
    "RestoreSlice": (0,),
    "MergeV2Checkpoints": (0, 1),
}
CHECKPOINT_OPS = frozenset(_PATH_INPUTS)


def _name(ref: str) -> str:
    """The node (or function argument) an input reference names: `^a`, `a:0`, `a:out:0` -> `a`."""
    return ref.lstrip("^").split(":")[0]


def _data_inputs(node: Any) -> list[str]:
    return [ref for ref in node.input if not ref.startswith("^")]


def _calls(node: Any, library: Iterable[str]) -> set[str]:
    """The library functions a node calls: as its op, or through function-valued attributes."""
    called = {node.op} & set(library)
    for attr in node.attr.values():
        if attr.HasField("func"):
            called.add(attr.func.name)
        if attr.HasField("list"):
            called.update(f.name for f in attr.list.func)
    return called


@dataclass
class _Body:
    """One graph body: the meta graph's graph_def, or one library function."""

    label: str
    nodes: dict[str, Any]
    args: list[str] = field(default_factory=list)  # a function's input names, in order

    def closure(self, starts: Iterable[str], stop: str | None = None) -> set[str]:
        """The nodes `starts` depend on (data and control inputs), themselves included."""
        seen: set[str] = set()
        todo = [s for s in starts if s in self.nodes]
        while todo:
            name = todo.pop()
            if name in seen or name == stop:
                continue
            seen.add(name)
            todo.extend(n for n in map(_name, self.nodes[name].input) if n in self.nodes)
        return seen

    def is_path(self, ref: str, filenames: set[str]) -> bool:
        """Whether the tensor is the filename, or the filename joined with safe constant suffixes."""
        name = _name(ref)
        if name in filenames:
            return True
        node = self.nodes.get(name)
        if node is None:
            return False
        inputs = _data_inputs(node)
        if node.op == "Identity":
            return self.is_path(inputs[0], filenames)
        if node.op in ("ShardedFilename", "StringJoin") and inputs:
            first, rest = inputs[0], inputs[1:] if node.op == "StringJoin" else []
            return self.is_path(first, filenames) and all(self._safe_text(r) for r in rest)
        if node.op == "Pack":
            return bool(inputs) and all(self.is_path(r, filenames) for r in inputs)
        return False

    def _safe_text(self, ref: str) -> bool:
        """A constant string (or a choice between two) that cannot climb out of a folder."""
        node = self.nodes.get(_name(ref))
        if node is None:
            return False
        inputs = _data_inputs(node)
        if node.op == "Const":
            values = node.attr["value"].tensor.string_val
            return all(b".." not in value for value in values)
        if node.op == "Identity":
            return self._safe_text(inputs[0])
        if node.op == "Select" and len(inputs) == 3:
            return self._safe_text(inputs[1]) and self._safe_text(inputs[2])
        return False


def _reachable(functions: Iterable[str], library: dict[str, Any]) -> set[str]:
    """These functions and every function they call, transitively."""
    seen: set[str] = set()
    todo = [f for f in functions if f in library]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for node in library[name].node_def:
            todo.extend(f for f in _calls(node, library) if f not in seen)
    return seen


def _filename_args(callers: list[tuple[_Body, Any, set[str]]], function: Any) -> set[str]:
    """The arguments of `function` that every call passes the filename (or a path made of it)."""
    names = [arg.name for arg in function.signature.input_arg]
    common: set[str] | None = None
    for body, node, filenames in callers:
        passed = {
            names[i] for i, ref in enumerate(_data_inputs(node)[: len(names)]) if body.is_path(ref, filenames)
        }
        common = passed if common is None else common & passed
    return common or set()


def unsafe_ops(meta: Any) -> set[str]:
    """The unsafe ops of one meta graph that its real saver does not account for."""
    library = {f.signature.name: f for f in meta.graph_def.library.function}
    graph = _Body("graph", {n.name: n for n in meta.graph_def.node})
    saver = meta.saver_def if meta.HasField("saver_def") else None
    filename = _name(saver.filename_tensor_name) if saver else None
    starts = [_name(saver.save_tensor_name), _name(saver.restore_op_name)] if saver else []
    saver_nodes = graph.closure(starts, stop=filename)
    others = [n for n in graph.nodes if n not in saver_nodes]
    run_by_others = graph.closure(others)  # what the main/init ops and signatures may run

    saver_calls = {f for n in saver_nodes for f in _calls(graph.nodes[n], library)}
    called_elsewhere = {f for n in others for f in _calls(graph.nodes[n], library)}
    called_elsewhere |= set(meta.object_graph_def.concrete_functions)
    called_elsewhere |= set(library) - _reachable(saver_calls, library)
    saver_only = _reachable(saver_calls, library) - _reachable(called_elsewhere, library)

    unsafe = set()
    for name in graph.nodes:
        node = graph.nodes[name]
        allowed = name in saver_nodes and name not in run_by_others
        if node.op in UNSAFE_OPS and not (allowed and _reads_filename(graph, node, {filename or ""})):
            unsafe.add(node.op)
    filenames = _saver_filenames(graph, saver_nodes, {filename or ""}, library, saver_only)
    for fname, function in library.items():
        body = _Body(fname, {n.name: n for n in function.node_def})
        for node in function.node_def:
            allowed = fname in saver_only and _reads_filename(body, node, filenames.get(fname, set()))
            if node.op in UNSAFE_OPS and not allowed:
                unsafe.add(node.op)
    return unsafe


def _reads_filename(body: _Body, node: Any, filenames: set[str]) -> bool:
    """A checkpoint op whose every path input is made of the saver's filename."""
    positions = _PATH_INPUTS.get(node.op)
    inputs = _data_inputs(node)
    return positions is not None and all(
        i < len(inputs) and body.is_path(inputs[i], filenames) for i in positions
    )


def _saver_filenames(
    graph: _Body, saver_nodes: set[str], filename: set[str], library: dict[str, Any], saver_only: set[str]
) -> dict[str, set[str]]:
    """For each saver-only function, the argument names that carry the filename."""
    found: dict[str, set[str]] = {}
    callers: dict[str, list[tuple[_Body, Any, set[str]]]] = {}
    for name in saver_nodes:
        for fname in _calls(graph.nodes[name], library) & saver_only:
            callers.setdefault(fname, []).append((graph, graph.nodes[name], filename))
    pending = sorted(callers)
    while pending:  # callers first: a nested saver function gets what its caller passes on
        fname = pending.pop(0)
        found[fname] = _filename_args(callers[fname], library[fname])
        body = _Body(fname, {n.name: n for n in library[fname].node_def})
        for node in library[fname].node_def:
            for callee in _calls(node, library) & saver_only:
                if callee not in found:
                    callers.setdefault(callee, []).append((body, node, found[fname]))
                    if callee not in pending:
                        pending.append(callee)
    return found


def check_ops(folder: Path) -> None:
    """SourceError when the SavedModel holds an op that touches files or runs Python."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString((folder / "saved_model.pb").read_bytes())
    except Exception:
        raise SourceError(f"{folder.name}: saved_model.pb is not a SavedModel protobuf") from None
    unsafe = sorted(set().union(*(unsafe_ops(meta) for meta in proto.meta_graphs)))
    if unsafe:
        where = (
            " (checkpoint ops only in its own saver, on its own variables)"
            if CHECKPOINT_OPS & set(unsafe)
            else ""
        )
        raise SourceError(
            f"the SavedModel uses {', '.join(unsafe)}, which read or write files or run "
            f"Python{where}; refused without running it"
        )
