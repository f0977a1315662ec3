"""torch.export program -> AOTInductor package (.pt2) compiled for a chosen x86-64 ISA level.

Inductor compiles its generated C++ with `-march=native` and the host's widest vector ISA unless
told otherwise, so by default a package built on an AVX-512 host is not known to run anywhere
else and differs byte for byte from one built elsewhere. Here the ISA level is explicit:
`x86-64-v3` (AVX2, FMA; any x86-64 server since 2013) by default, `x86-64-v2` (no vector
kernels), or `native` (this host's best, recorded but not portable).

The package is also reproducible: inductor writes its cache path into the generated sources and
the shared library, so every compile uses the same path, emptied first, and the package is
written through memory so its folder name does not depend on the output path.
"""

from __future__ import annotations

import fcntl
import io
import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shipyard.runtime_dir import runtime_dir

__all__ = ["AotiOptions", "IsaLevel", "export_aoti_package", "inductor_configs", "warm_up"]

IsaLevel = Literal["x86-64-v2", "x86-64-v3", "native"]

# The same path on every host: it ends up in the package's sources and binary.
BUILD_DIR = Path("/tmp/shipyard-aoti-build")


class AotiOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    isa: IsaLevel = Field(
        default="x86-64-v3",
        description="x86-64 ISA level the package is compiled for: x86-64-v3 (AVX2, the default), "
        "x86-64-v2 (no vector kernels) or native (this host's best; not portable)",
    )


def _host_has_avx512() -> bool:
    return "avx512f" in Path("/proc/cpuinfo").read_text()


def inductor_configs(isa: IsaLevel) -> dict[str, Any]:
    """Inductor settings for an ISA level: vector width and the compiler's -march."""
    if isa == "x86-64-v3":
        configs: dict[str, Any] = {"cpp.simdlen": 256, "cpp.march": "x86-64-v3"}
    elif isa == "x86-64-v2":
        configs = {"cpp.simdlen": 1, "cpp.march": "x86-64-v2"}
    else:
        configs = {"cpp.simdlen": 512 if _host_has_avx512() else 256, "cpp.march": "native"}
    configs["aot_inductor.metadata"] = {"shipyard_isa": isa}
    return configs


def warm_up() -> None:
    """Probe which vector ISAs gcc can build for here (inductor compiles a test program per ISA,
    about 9 s, once per process); a warm process does it once for every compile it forks."""
    from torch._inductor.cpu_vec_isa import valid_vec_isa_list

    valid_vec_isa_list()


def _owned_empty_folder(folder: Path) -> None:
    """Make `folder` an empty folder of this user, refusing one another user put there."""
    try:
        found = os.lstat(folder)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.getuid():
            raise RuntimeError(f"{folder} exists and is not a folder of this user; remove it")
        shutil.rmtree(folder)
    folder.mkdir(mode=0o700)


@contextmanager
def _build_dir() -> Iterator[Path]:
    """The fixed build folder, emptied, held by one compile at a time on this host.

    Its lock lives in this user's private runtime folder, where no other user can put one first.
    """
    private = runtime_dir()
    if private is None:
        raise RuntimeError(
            "no private runtime folder for the AOTI build lock ($SHIPYARD_RUNTIME_DIR or "
            "$XDG_RUNTIME_DIR/shipyard must be this user's, mode 0700)"
        )
    lock = os.open(private / "aoti-build.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _owned_empty_folder(BUILD_DIR)
        try:
            yield BUILD_DIR
        finally:
            shutil.rmtree(BUILD_DIR, ignore_errors=True)
    finally:
        os.close(lock)


def export_aoti_package(source: Path, path: Path, isa: IsaLevel = "x86-64-v3") -> Path:
    import torch

    from shipyard.torch_program import load_program

    program = load_program(source)
    with _build_dir() as build:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(build)
        buffer = io.BytesIO()
        torch._inductor.aoti_compile_and_package(
            program, package_path=buffer, inductor_configs=inductor_configs(isa)
        )
    path.write_bytes(buffer.getvalue())
    return path
