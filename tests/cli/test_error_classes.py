"""Each class of `pivot.errors` reaches the user as one paragraph (what is wrong, then the
advice the CLI adds for its class and hint) with its exit code, and no traceback unless
`--verbose`. The errors are raised by a real pipeline file, as any layer would raise them."""

from __future__ import annotations

import ast
import pathlib
import pickle
import re

import pytest
from support import write_files

from pivot import errors
from pivot.cli.advice import HINTS, paragraph

PACKAGE = pathlib.Path(errors.__file__).parent

# (the raise, the paragraph the user reads after "Error: <pipeline file>: ")
CASES = [
    (
        "errors.DefinitionError('Unknown remote \\'origin\\'.', remote='origin', "
        "hint='add-remote')",
        "Unknown remote 'origin'. Add it with `pivot remote add origin URL`.",
    ),
    (
        "errors.CorruptFile('The lock file x.lock is unreadable.', path='x.lock')",
        "The lock file x.lock is unreadable.",
    ),
    (
        "errors.UnsafePath('Refusing the output \\'../x\\'.', path='../x')",
        "Refusing the output '../x'.",
    ),
    (
        "errors.ProjectError('The cache is a link to nothing.', path='.pivot/cache')",
        "The cache is a link to nothing.",
    ),
    (
        "errors.MissingPackage('Install pandas.', package='pandas')",
        "Install pandas.",
    ),
    ("errors.StageFailed('1 stage(s) did not complete: p/a.', stages=('p/a',))", None),
    (
        "errors.RemoteUnreachable('Cannot read remote \\'s\\': no usable credentials.', "
        "remote='s', hint='s3-credentials')",
        "Cannot read remote 's': no usable credentials. Use an AWS profile (`pivot remote "
        "modify s profile NAME`), the environment variables AWS_ACCESS_KEY_ID / "
        "AWS_SECRET_ACCESS_KEY, or `pivot remote modify --local s access_key_id ...` and "
        "`secret_access_key ...`.",
    ),
    (
        "errors.RemoteIncomplete('The remote lacks 1 blob(s).', remote='r', missing=('ab',))",
        "The remote lacks 1 blob(s).",
    ),
    (
        "errors.RemoteCorrupt('The pack is damaged.', remote='r', key='packs/ab')",
        "The pack is damaged.",
    ),
    (
        "errors.CacheCorrupt('The manifest is wrong.', 'ab' * 32, path='out', hint='rerun-stage')",
        "The manifest is wrong. Run the stage that produces it again (`pivot run --force STAGE`).",
    ),
    (
        "errors.DamagedBlob('The object is damaged.', 'ab' * 32, hint='run-or-pull')",
        "The object is damaged. Run `pivot run` to rebuild it, or `pivot pull` to fetch it "
        "from a remote.",
    ),
    (
        "errors.DiskFull('out/big.bin')",
        "No space left on device while writing out/big.bin; nothing half-written was kept. "
        "Free some space (`pivot gc` removes cache objects no lock file needs) and run the "
        "command again.",
    ),
]


@pytest.mark.parametrize("raised,expected", CASES, ids=[c[0].split("(")[0] for c in CASES])
def test_each_class_is_one_paragraph_and_exit_1(project, pivot, raised, expected) -> None:
    write_files(project, {"pipeline.py": f"from pivot import errors\n\nraise {raised}\n"})
    expected = expected or eval(raised, {"errors": errors}).args[0]
    proc = pivot("status", rc=1)
    assert proc.stdout == ""
    assert proc.stderr == f"Error: {project / 'pipeline.py'}: {expected}\n"


def test_verbose_adds_the_traceback_before_the_paragraph(project, pivot) -> None:
    raised = "errors.RemoteUnreachable('Cannot reach it.', remote='r', hint='reach-endpoint')"
    write_files(project, {"pipeline.py": f"from pivot import errors\n\nraise {raised}\n"})
    verbose = pivot("--verbose", "status", rc=1)
    assert verbose.stderr.startswith("Traceback (most recent call last):\n")
    assert "pivot.errors.RemoteUnreachable: " in verbose.stderr
    assert verbose.stderr.endswith(
        f"Error: {project / 'pipeline.py'}: Cannot reach it. Check the network, that the "
        f"server is running, and the endpoint_url (`pivot remote modify r endpoint_url "
        f"URL`).\n"
    )


def test_exit_codes_are_the_documented_ones() -> None:
    """docs/cli.md lists every class with its exit code; the classes agree."""
    doc = (PACKAGE.parent / "docs" / "cli.md").read_text()
    listed = dict(re.findall(r"^\| `(\w+)` \| (\d+) \|", doc, re.MULTILINE))
    classes = {
        name: cls
        for name, cls in vars(errors).items()
        if isinstance(cls, type) and issubclass(cls, errors.PivotError)
    }
    assert sorted(listed) == sorted(classes)
    assert {n: int(code) for n, code in listed.items()} == {
        n: c.exit_code for n, c in classes.items()
    }


def test_every_hint_raised_has_advice_and_every_advice_is_used() -> None:
    source = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py") if p.name != "advice.py")
    used = set(re.findall(r"\"([a-z0-9-]+)\"", source)) & set(HINTS)
    named = set(re.findall(r"hint=\"([a-z0-9-]+)\"", source))
    assert named <= set(HINTS), named - set(HINTS)
    assert used == set(HINTS), set(HINTS) - used


def test_no_message_below_the_cli_names_a_command() -> None:
    """Advice that names a `pivot` command is the CLI's (pivot/cli/advice.py): no string
    below `cli` (an error, a warning, a `status` reason) names one, quoted or not."""
    from pivot.cli.main import COMMANDS

    names = "|".join(sorted(COMMANDS))
    command = re.compile(rf"`pivot [a-z]|\bpivot ({names})\b")
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "cli" in path.relative_to(PACKAGE).parts:
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
                and command.search(node.value)
            ):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.value}")
    assert found == [], "\n".join(found)


def test_errors_keep_class_data_and_advice_across_processes_and_rewording() -> None:
    error = errors.RemoteIncomplete(
        "The remote lacks 2 blob(s).", remote="r", missing=("a", "b"), hint="add-remote"
    )
    for copy in (pickle.loads(pickle.dumps(error)), error.reworded(f"Cannot restore: {error}")):
        assert type(copy) is errors.RemoteIncomplete
        assert (copy.remote, copy.missing, copy.hint) == ("r", ("a", "b"), "add-remote")
    assert paragraph(error.reworded(f"Cannot restore: {error}")) == (
        "Cannot restore: The remote lacks 2 blob(s). Add it with `pivot remote add r URL`."
    )
