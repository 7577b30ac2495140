"""Print passed/failed/skipped per tox environment from the junit files, and the total."""

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else ".tox")
total = {"passed": 0, "failed": 0, "skipped": 0}
for path in sorted(root.glob("junit-*.xml")):
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for suite in ET.parse(path).getroot().iter("testsuite"):
        tests, failures = int(suite.get("tests", 0)), int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skipped = int(suite.get("skipped", 0))
        counts["failed"] += failures
        counts["skipped"] += skipped
        counts["passed"] += tests - failures - skipped
    for key in total:
        total[key] += counts[key]
    env = path.stem.removeprefix("junit-")
    print(f"{env:>18}: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")
print(f"tox: {total['passed']} passed, {total['failed']} failed, {total['skipped']} skipped")
