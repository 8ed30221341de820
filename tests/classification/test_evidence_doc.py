"""docs/evidence.md holds the tables that tools/summarize.py prints from the study's kept runs
(docs/evidence/digits): the page cannot drift from its data."""
import contextlib
import io
import os

import pytest

from adarand_projects.paper import summary

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RUNS = os.path.join(REPO, "docs", "evidence", "digits")


def table_lines(argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        summary.main(["--table", "digits", "--root", RUNS, *argv])
    return [line for line in out.getvalue().splitlines() if line.startswith("|")]


@pytest.mark.parametrize("argv", [[], ["--paired", "ft"], ["--paired", "randreg-cp"]],
                         ids=["plain", "paired-ft", "paired-randreg-cp"])
def test_evidence_page_shows_the_tables_of_its_runs(argv):
    page = open(os.path.join(REPO, "docs", "evidence.md")).read()
    lines = table_lines(argv)[-6:]  # with --paired the plain table comes first; the last: header, rule, 4 methods
    assert "\n".join(lines) in page
