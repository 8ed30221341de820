"""What every tools/bench_*.py does last: write the Markdown report, print the table and the JSON line."""
import json
import os


def write_report(path, report, table, summary):
    """Write ``report`` to ``path``, print ``table``, then ``summary`` as one JSON line (the last line)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(report)
    print(table)
    print(f"written to {path}")
    print(json.dumps(summary))
