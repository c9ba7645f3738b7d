"""Pages that quote a result file quote it unedited: the README's results table is docs/results.md's."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|")]


def test_the_readme_results_table_is_a_copy_of_the_generated_page():
    readme = ROOT / "README.md"
    results = (ROOT / "docs" / "results.md").read_text()
    section = readme.read_text().split("## Results", 1)[1].split("\n## ", 1)[0]
    rows = table_rows(section)
    assert len(rows) >= 3 and all(row in results.splitlines() for row in rows)


def test_the_readme_stays_a_short_guide():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200
