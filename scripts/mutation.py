"""`make mutation`: mutation testing of the modules listed in mutation.toml, with cosmic-ray.

For each module: only the listed functions are mutated (their lines, found by name, so the list survives edits),
one mutant at a time, and the module's tests run against it; a mutant they notice is killed, one they do not
survives. The run happens in a copy of the working tree's tracked files (cosmic-ray edits the file it mutates in
place: the checkout is never touched). It prints each module's score and its survivors, writes them to
docs/mutation.md (or PATH) with --write [PATH], and exits 1 when a module's score is below mutation.toml's min_score.

    python -m scripts.mutation [--write [PATH]] [--only app/batcher.py ...]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "mutation.toml"
REPORT = ROOT / "docs" / "mutation.md"
TOOL = ROOT / ".venv-tools" / "cosmic-ray" / "bin"
# Each mutant pays a pytest start-up: without plugin autoload it is ~2 s instead of ~8 s (the suite's tests need none
# of the third-party plugins; hypothesis works without its plugin).
TEST_ENV = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def function_lines(source: str, names: list[str]) -> list[tuple[int, int]]:
    """Line ranges (def to last line) of the named functions; `Class.method` for methods."""
    found: dict[str, tuple[int, int]] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = prefix + child.name
                if not isinstance(child, ast.ClassDef):
                    found[name] = (child.lineno, child.end_lineno or child.lineno)
                visit(child, name + ".")

    visit(ast.parse(source), "")
    missing = [name for name in names if name not in found]
    if missing:
        raise SystemExit(f"mutation.toml: no function {', '.join(missing)} in the module (renamed?)")
    return [found[name] for name in names]


def copy_checkout(dest: Path) -> None:
    """The tracked files as they are in the working tree (uncommitted edits included)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in files.decode().split("\0"):
        source = ROOT / name
        if name and source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def toml_value(value: object) -> str:
    return json.dumps(value)  # strings, numbers and lists of them are the same in TOML and JSON


def cosmic_config(module: dict, exclude: list[str], timeout: float) -> str:
    source = (ROOT / module["path"]).read_text()
    ranges = [f"{start}-{end}" for start, end in function_lines(source, module["functions"])]
    command = " ".join(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *map(quote, module["tests"])]
    )
    return "\n".join(
        [
            "[cosmic-ray]",
            f"module-path = {toml_value(module['path'])}",
            f"timeout = {timeout}",
            "excluded-modules = []",
            f"test-command = {toml_value(command)}",
            "[cosmic-ray.distributor]",
            'name = "local"',
            "[cosmic-ray.filters.operators-filter]",
            f"exclude-operators = {toml_value(exclude)}",
            "[cosmic-ray.filters.line-filter.lines]",
            f"{toml_value(module['path'])} = {toml_value(ranges)}",
            "",
        ]
    )


def quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


def run_module(module: dict, exclude: list[str], work: Path) -> dict:
    """Baseline, then every mutant of the module's functions; returns counts and the survivors."""
    env = {**os.environ, **TEST_ENV}
    started = time.monotonic()
    baseline = subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *module["tests"]],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    if baseline.returncode != 0:
        raise SystemExit(f"{module['path']}: its tests fail without any mutant:\n{baseline.stdout[-3000:]}")
    baseline_s = time.monotonic() - started
    name = module["path"].replace("/", "_")
    config, session = work / f"{name}.toml", work / f"{name}.sqlite"
    # a mutant that makes the tests hang is killed by the timeout: generous, as the machine may be busy
    config.write_text(cosmic_config(module, exclude, timeout=max(60.0, 5 * baseline_s)))
    for step in (
        [TOOL / "cosmic-ray", "init", config, session],
        [TOOL / "cr-filter-operators", session, config],
        [TOOL / "cr-filter-lines", "--config", config, session],
        [TOOL / "cosmic-ray", "exec", config, session],
    ):
        subprocess.run([str(part) for part in step], cwd=work, env=env, check=True, capture_output=True)
    dump = subprocess.run(
        [str(TOOL / "cosmic-ray"), "dump", str(session)], cwd=work, capture_output=True, text=True, check=True
    ).stdout
    counts = {"killed": 0, "survived": 0, "incompetent": 0}
    survivors = []
    for line in dump.splitlines():
        item, result = json.loads(line)
        if result is None or result.get("worker_outcome") == "skipped":
            continue
        outcome = result.get("test_outcome") or "incompetent"
        if result.get("worker_outcome") == "abnormal":  # the tests hung past the timeout: the mutant was noticed
            outcome = "killed"
        counts[outcome] = counts.get(outcome, 0) + 1
        if outcome == "survived":
            mutation = item["mutations"][0]
            changed = [
                d[1:].strip() for d in (result.get("diff") or "").splitlines() if d.startswith("+") and d[1:2] != "+"
            ]
            survivors.append(
                {
                    "line": mutation["start_pos"][0],
                    "operator": mutation["operator_name"].removeprefix("core/"),
                    "becomes": changed[0] if changed else "",
                }
            )
    tested = counts["killed"] + counts["survived"]
    return {
        "path": module["path"],
        "functions": module["functions"],
        "tests": " ".join(module["tests"]),
        **counts,
        "score": counts["killed"] / tested if tested else 1.0,
        "survivors": sorted(survivors, key=lambda s: s["line"]),
        "seconds": round(time.monotonic() - started),
    }


def markdown(results: list[dict], min_score: float, seconds: float) -> str:
    lines = [
        "# Mutation testing",
        "",
        "`make mutation` (scripts/mutation.py, cosmic-ray 8.7.0; modules, functions and tests in mutation.toml) "
        "changes one thing in one line of the functions that gate releases and guard inputs, runs the module's "
        "tests, and counts the mutants they notice (killed). The project keeps every module at "
        f"**≥ {min_score:.0%} killed**; a run below fails. Weekly and on demand: `.github/workflows/mutation.yml`.",
        "",
        f"Last run: {seconds / 60:.0f} min on 2 shared cores.",
        "",
        "| module | functions | tests | killed | survived | score | time |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| `{r['path']}` | {', '.join(r['functions'])} | `{r['tests']}` | {r['killed']} | {r['survived']} "
            f"| {r['score']:.0%} | {r['seconds']} s |"
        )
    lines += ["", "## Surviving mutants", ""]
    for r in results:
        if not r["survivors"]:
            continue
        lines.append(f"`{r['path']}`:")
        lines.append("")
        for s in r["survivors"]:
            lines.append(f"- line {s['line']}: {s['operator']} → `{s['becomes']}`")
        lines.append("")
    if not any(r["survivors"] for r in results):
        lines.append("None.")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--write", nargs="?", const=REPORT, type=Path, metavar="PATH", help=f"write the report (default: {REPORT})"
    )
    parser.add_argument("--only", nargs="+", metavar="PATH", help="only these modules of mutation.toml")
    args = parser.parse_args(argv)
    if not (TOOL / "cosmic-ray").is_file():
        print("mutation: cosmic-ray is not installed: bash .ci/install.sh (it goes in .venv-tools/cosmic-ray)")
        return 2
    config = tomllib.loads(CONFIG.read_text())
    modules = [m for m in config["module"] if not args.only or m["path"] in args.only]
    started = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory(prefix="cola-mutation-") as tmp:
        work = Path(tmp)
        copy_checkout(work)
        for module in modules:
            result = run_module(module, config["exclude_operators"], work)
            results.append(result)
            print(
                f"{result['path']}: {result['score']:.0%} killed ({result['killed']} killed, {result['survived']} "
                f"survived, {result['incompetent']} incompetent) in {result['seconds']} s",
                flush=True,
            )
            for s in result["survivors"]:
                print(f"    survived: line {s['line']} {s['operator']}: {s['becomes']}", flush=True)
    report = markdown(results, config["min_score"], time.monotonic() - started)
    if args.write:
        args.write.write_text(report)
    low = [r["path"] for r in results if r["score"] < config["min_score"]]
    if low:
        print(f"mutation: below {config['min_score']:.0%} killed: {', '.join(low)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
