"""Parses a Prometheus text exposition from stdin with prometheus_client's own parser and
prints what it understood, for tests/ops.rs:

    FAMILY <name> <type>
    SAMPLE <family> <sample name> <labels as k=v, sorted, comma-separated> <value>

Exits 3 when prometheus_client is not installed (the test skips, or fails under
STARLING_INTEROP=1); a parse error is a traceback and exit status 1."""

import sys

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError as e:
    print(f"prometheus_client is not importable: {e}", file=sys.stderr)
    sys.exit(3)

text = sys.stdin.read()
for family in text_string_to_metric_families(text):
    print(f"FAMILY\t{family.name}\t{family.type}")
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        print(f"SAMPLE\t{family.name}\t{s.name}\t{labels}\t{s.value!r}")
print("OK")
