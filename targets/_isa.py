"""Which x86-64 instruction-set extensions a compiled package really uses, read from its code.

The compiler flags say what the compiler was allowed to use; decoding every instruction of the
package's shared libraries (iced-x86) says what the package needs from the CPU. The levels are
the x86-64 psABI microarchitecture levels.
"""

from __future__ import annotations

import io
import zipfile
from collections import Counter
from pathlib import Path

from pydantic import BaseModel

__all__ = ["ALLOWED_FEATURES", "IsaAudit", "audit_package"]

_GENERIC = {
    "INTEL8086", "INTEL186", "INTEL286", "INTEL386", "INTEL486", "X64", "CPUID", "MULTIBYTENOP",
    "PAUSE", "TSC", "CLFSH", "FPU", "FPU287", "FPU387", "CET_IBT",  # endbr64 is a NOP before CET
}  # fmt: skip
_V1 = _GENERIC | {"CMOV", "CX8", "FXSR", "MMX", "SSE", "SSE2", "SYSCALL"}
_V2 = _V1 | {"CMPXCHG16B", "POPCNT", "SSE3", "SSSE3", "SSE4_1", "SSE4_2"}
_V3 = _V2 | {"AVX", "AVX2", "BMI1", "BMI2", "F16C", "FMA", "LZCNT", "MOVBE", "XSAVE"}

ALLOWED_FEATURES = {"x86-64-v2": frozenset(_V2), "x86-64-v3": frozenset(_V3)}


class IsaAudit(BaseModel):
    instructions: int
    features: dict[str, int]  # CPUID feature -> instructions needing it
    examples: dict[str, str]  # CPUID feature -> one instruction needing it

    def beyond(self, level: str) -> list[str]:
        """Features the code needs that the ISA level does not include."""
        return sorted(set(self.features) - ALLOWED_FEATURES[level])


def _audit_elf(data: bytes, name: str, counts: Counter[str], examples: dict[str, str]) -> int:
    from elftools.elf.elffile import ELFFile
    from iced_x86 import Code, CpuidFeature, Decoder, Formatter, FormatterSyntax

    names = {v: k for k, v in vars(CpuidFeature).items() if isinstance(v, int) and not k.startswith("_")}
    formatter = Formatter(FormatterSyntax.GAS)
    decoded = 0
    for section in ELFFile(io.BytesIO(data)).iter_sections():
        if section["sh_type"] != "SHT_PROGBITS" or not section["sh_flags"] & 0x4:  # executable
            continue
        for ins in Decoder(64, section.data(), ip=section["sh_addr"]):
            decoded += 1
            if ins.code == Code.INVALID:
                continue
            for feature in ins.cpuid_features():
                label = names[feature]
                counts[label] += 1
                examples.setdefault(label, f"{name} {section.name}+{ins.ip:#x}: {formatter.format(ins)}")
    return decoded


def audit_package(package: Path) -> IsaAudit:
    """Decode every shared library inside an AOTInductor package (a zip)."""
    counts: Counter[str] = Counter()
    examples: dict[str, str] = {}
    total = 0
    with zipfile.ZipFile(package) as archive:
        for entry in archive.namelist():
            if entry.endswith(".so"):
                total += _audit_elf(archive.read(entry), entry.rsplit("/", 1)[-1], counts, examples)
    return IsaAudit(instructions=total, features=dict(counts), examples=examples)
