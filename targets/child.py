"""Child-process entry: `python -m targets.child {export|run} JOB.json RESULT.json`.

Converters and runtimes run here, so a crash, hang or memory blow-up takes down only
this process and fails only its target.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

from targets import get_target
from targets._errors import short_error
from targets._jobs import ExportJob, RuntimeJob


def main(argv: list[str]) -> int:
    step, job_path, result_path = argv
    text = Path(job_path).read_text()
    try:
        if step == "export":
            export_job = ExportJob.model_validate_json(text)
            result = get_target(export_job.target).load_exporter()(export_job)
        elif step == "run":
            runtime_job = RuntimeJob.model_validate_json(text)
            result = get_target(runtime_job.target).load_runtime()(runtime_job)
        else:
            raise SystemExit(f"unknown step {step!r}")
    except Exception as exc:
        traceback.print_exc()
        Path(result_path).write_text(short_error(exc))
        return 1
    Path(result_path).write_text(result.model_dump_json(indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
