"""summary.json of benchmarks/gpu_check.sh: the device and versions, and each stage's entry, with a test stage's counts
and failed tests read from its JUnit file (OUTDIR/<stage>.xml, written by pytest in the same run).

    python benchmarks/gpu_check_summary.py [--dry-run] OUTDIR SECONDS STAGE_JSON...

Prints the summary as one JSON line and writes OUTDIR/summary.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import torch


def junit_results(path: Path) -> dict:
    """Counts (ran, passed, failed, skipped) and the failed tests ("module::test[params]: first line of the message";
    errors count as failures) of a pytest JUnit XML file."""
    try:
        cases = list(ET.parse(path).getroot().iter("testcase"))
    except ET.ParseError as err:
        return {"tests": {"unreadable": f"{path}: {err}"}, "failed_tests": []}
    failed, skipped = [], 0
    for case in cases:
        bad = case.find("failure")
        bad = case.find("error") if bad is None else bad
        if bad is not None:
            first = (bad.get("message") or "").strip().splitlines()[:1]
            failed.append(f"{case.get('classname')}::{case.get('name')}: {first[0][:200] if first else ''}")
        elif case.find("skipped") is not None:
            skipped += 1
    counts = {"ran": len(cases), "passed": len(cases) - len(failed) - skipped, "failed": len(failed),
              "skipped": skipped}
    return {"tests": counts, "failed_tests": failed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("seconds", type=int, help="seconds since the check started")
    parser.add_argument("stages", nargs="*", help="one JSON object per stage, in order")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    stages = [json.loads(s) for s in args.stages]
    for s in stages:
        junit = args.outdir / f"{s['stage']}.xml"
        if junit.exists():
            s.update(junit_results(junit))
    p = torch.cuda.get_device_properties(0) if torch.cuda.is_available() else None
    summary = {"dry_run": args.dry_run, "device": p.name if p else None, "sms": p.multi_processor_count if p else None,
               "torch": torch.__version__, "cuda": torch.version.cuda, "seconds": args.seconds, "stages": stages}
    (args.outdir / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
