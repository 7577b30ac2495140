"""What a user downloads, and the files that keep it right.

The sdist and the wheel are the ones ``tox -e package`` has just built into ``$BESTLINK_DIST``
with ``python -m build``, as a release would; without that variable this module is skipped
(run ``tox -e package``). The checks of the repository's own files (the workflow, the pre-commit
hooks) are here too, because the same environment has their parsers.
"""

from __future__ import annotations

import configparser
import email
import email.message
import functools
import hashlib
import importlib.util
import itertools
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType

import pytest

if not os.environ.get("BESTLINK_DIST"):
    pytest.skip("needs the built sdist and wheel: run `tox -e package`", allow_module_level=True)

# yaml (and tomli before 3.11): the package environment installs them
if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
DIST = Path(os.environ["BESTLINK_DIST"])
PACKAGE = "lightning_bestlink"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# the official text, https://www.apache.org/licenses/LICENSE-2.0.txt (md5 3b83ef96387f14655fc854ddc3c6bd57)
APACHE_2_0_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"
EXTRAS = {"lightning", "pytorch-lightning", "s3"}  # at least these; more may be added


# --- the built distributions -------------------------------------------------------------------


def _one(pattern: str) -> Path:
    found = sorted(DIST.glob(pattern))
    assert len(found) == 1, f"expected one {pattern} in {DIST}, found {[p.name for p in found]}"
    return found[0]


@pytest.fixture(scope="module")
def wheel() -> Iterator[zipfile.ZipFile]:
    with zipfile.ZipFile(_one("*.whl")) as whl:
        yield whl


@pytest.fixture(scope="module")
def sdist() -> dict[str, bytes]:
    """Every file of the sdist by its path below the top folder."""
    with tarfile.open(_one("*.tar.gz")) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        tops = {m.name.split("/", 1)[0] for m in members}
        assert len(tops) == 1, tops
        return {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in members}  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def dist_info(wheel: zipfile.ZipFile) -> str:
    (name,) = {n.split("/", 1)[0] for n in wheel.namelist() if n.split("/", 1)[0].endswith(".dist-info")}
    return name


@pytest.fixture(scope="module")
def metadata(wheel: zipfile.ZipFile, dist_info: str) -> email.message.Message:
    return email.message_from_string(wheel.read(f"{dist_info}/METADATA").decode())


@pytest.fixture(scope="module")
def description(metadata: email.message.Message) -> str:
    payload = metadata.get_payload()
    assert isinstance(payload, str)
    return payload


@functools.cache
def source_version() -> str:
    """``__version__`` as the built wheel reports it (imported from the wheel, in a clean interpreter)."""
    code = f"import sys; sys.path.insert(0, {str(_one('*.whl'))!r}); import {PACKAGE}; print({PACKAGE}.__version__)"
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_twine_check_strict_passes() -> None:
    files = [str(_one("*.tar.gz")), str(_one("*.whl"))]
    out = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *files], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("PASSED") == 2, out.stdout


def test_version_lives_in_one_place(metadata: email.message.Message, sdist: dict[str, bytes]) -> None:
    version = source_version()
    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?", version), version
    assert metadata["Version"] == version
    assert email.message_from_string(sdist["PKG-INFO"].decode())["Version"] == version
    assert _one("*.whl").name.startswith(f"{PACKAGE}-{version}-")
    # pyproject.toml reads it from the package; no other source file repeats it
    assert "version" in PYPROJECT["project"]["dynamic"] and "version" not in PYPROJECT["project"]
    assert PYPROJECT["tool"]["hatch"]["version"]["path"] == f"src/{PACKAGE}/__init__.py"
    repeats = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "src").rglob("*.py")
        if p.name != "__init__.py" or p.parent.name != PACKAGE
        if re.search(rf"['\"]{re.escape(version)}['\"]", p.read_text())
    ]
    assert repeats == [], f"the version {version} is written again in {repeats}: import __version__ instead"


def test_changelog_has_a_section_for_this_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "Keep a Changelog" in changelog
    assert re.search(rf"^## \[{re.escape(source_version())}\]", changelog, re.MULTILINE), (
        f"CHANGELOG.md has no '## [{source_version()}]' section"
    )


def test_license_is_in_the_sdist_and_the_wheel(
    wheel: zipfile.ZipFile, dist_info: str, sdist: dict[str, bytes], metadata: email.message.Message
) -> None:
    text = (ROOT / "LICENSE").read_bytes()
    assert hashlib.sha256(text).hexdigest() == APACHE_2_0_SHA256, "LICENSE is not the official Apache-2.0 text"
    assert sdist["LICENSE"] == text
    assert wheel.read(f"{dist_info}/licenses/LICENSE") == text
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata.get_all("License-File") == ["LICENSE"]


def test_wheel_holds_only_the_package(wheel: zipfile.ZipFile, dist_info: str) -> None:
    names = set(wheel.namelist())
    package = {n for n in names if n.startswith(f"{PACKAGE}/")}
    meta = {n.removeprefix(f"{dist_info}/") for n in names if n.startswith(f"{dist_info}/")}
    assert names == package | {f"{dist_info}/{m}" for m in meta}, sorted(names - package)
    assert meta == {"METADATA", "WHEEL", "RECORD", "entry_points.txt", "licenses/LICENSE"}
    source = {
        p.relative_to(ROOT / "src").as_posix()
        for p in (ROOT / "src" / PACKAGE).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
    assert package == source
    assert f"{PACKAGE}/py.typed" in package


def test_sdist_holds_the_sources_tests_and_docs_only(sdist: dict[str, bytes]) -> None:
    names = set(sdist)
    for must in ("PKG-INFO", "pyproject.toml", "LICENSE", "README.md", "CHANGELOG.md", "CONTRIBUTING.md", "tox.ini"):
        assert must in names
    folders = ["src", "tests", "docs", "examples", "benchmarks"]
    tracked = subprocess.run(["git", "ls-files", *folders], cwd=ROOT, capture_output=True, text=True, check=True)
    assert len(tracked.stdout.splitlines()) > 20, tracked.stdout
    assert set(tracked.stdout.splitlines()) <= names, sorted(set(tracked.stdout.splitlines()) - names)
    local = [n for n in names if re.search(r"(^|/)(\.tox|\.git|dist|build|__pycache__|\.mypy_cache)/", n)]
    assert local == []


def test_metadata_names_extras_entry_point_and_no_invented_urls(
    metadata: email.message.Message, wheel: zipfile.ZipFile, dist_info: str
) -> None:
    assert metadata["Name"] == "lightning-bestlink"
    assert metadata["Requires-Python"] == ">=3.10"
    extras = set(metadata.get_all("Provides-Extra") or [])
    assert extras >= EXTRAS
    requires = metadata.get_all("Requires-Dist") or []
    for extra in extras:
        assert any(f"extra == '{extra}'" in r for r in requires), f"extra {extra!r} installs nothing"
    assert any(r.startswith("pytorch-lightning") and "extra == 'pytorch-lightning'" in r for r in requires)
    entry_points = wheel.read(f"{dist_info}/entry_points.txt").decode()
    assert "lightning-bestlink = lightning_bestlink.cli:main" in entry_points
    # no public home yet: add Project-URL entries (and change this line) once one exists
    assert metadata.get_all("Project-URL") is None and metadata["Home-page"] is None


def test_classifiers_are_valid_and_match_requires_python(metadata: email.message.Message) -> None:
    from trove_classifiers import classifiers as known

    classifiers = metadata.get_all("Classifier") or []
    assert [c for c in classifiers if c not in known] == []
    assert "Framework :: Pytest" not in classifiers  # a pytest plugin it is not
    prefixes = ("Development Status ::", "Operating System ::", "Intended Audience ::", "Topic ::", "Typing ::")
    for prefix in prefixes:
        assert any(c.startswith(prefix) for c in classifiers), prefix
    versions = python_classifiers(classifiers)
    assert versions, "no 'Programming Language :: Python :: 3.X' classifier"
    assert metadata["Requires-Python"] == f">={versions[0]}"
    minors = [int(v.split(".")[1]) for v in versions]
    assert minors == list(range(minors[0], minors[-1] + 1)), f"a gap in the Python versions: {versions}"


def python_classifiers(classifiers: list[str]) -> list[str]:
    found = [m[1] for c in classifiers if (m := re.fullmatch(r"Programming Language :: Python :: (3\.\d+)", c))]
    return sorted(found, key=lambda v: int(v.split(".")[1]))


# --- the description on PyPI ---------------------------------------------------------------------


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src", "srcset") and value is not None:
                self.links.append((tag, name, value))
            if name == "id" and value is not None:
                self.ids.add(value)


def test_long_description_renders_with_no_link_into_the_repository(
    metadata: email.message.Message, description: str
) -> None:
    from readme_renderer.markdown import render

    assert metadata["Description-Content-Type"] == "text/markdown"
    html = render(description)  # what PyPI shows
    assert html is not None and "lightning-bestlink" in html
    parser = _Links()
    parser.feed(html)
    broken = [
        link
        for link in parser.links
        if not re.match(r"https?://", link[2]) and not (link[2].startswith("#") and link[2][1:] in parser.ids)
    ]
    assert broken == [], f"links PyPI cannot resolve: {broken}"
    assert not [tag for tag, *_ in parser.links if tag == "img"], "an image would need a public URL"


def test_long_description_is_the_readme_with_links_as_text(description: str) -> None:
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"\]\((?!https?://|#)", readme), "README.md has no relative link left to transform"
    assert not re.search(r"\]\((?!https?://|#)", description)
    headings = [line for line in readme.splitlines() if line.startswith("#")]
    assert headings == [line for line in description.splitlines() if line.startswith("#")]
    fence = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
    assert fence.findall(description) == fence.findall(readme), "a code block changed on its way to PyPI"
    for target in re.findall(r"\]\(((?!https?://|#)[^)]+)\)", readme):
        assert f"`{target}`" in description, f"{target} is no longer named"


def test_readme_transformation_of_each_kind_of_link(tmp_path: Path) -> None:
    # pyproject.toml's substitutions, run by the plugin's own command line on a README of every case
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    cases = {
        "More in [docs/cli.md](docs/cli.md).": "More in `docs/cli.md`.",
        "A loop: [`examples/x.py`](examples/x.py).": "A loop: `examples/x.py`.",
        "See [the guide](docs/remote.md#failures).": "See the guide (`docs/remote.md#failures`).",
        "![A plot](docs/plot.png)": "*Figure (`docs/plot.png` in the source distribution): A plot.*",
        "[Lightning](https://lightning.ai) stays": "[Lightning](https://lightning.ai) stays",
        "Up to [Install](#install) stays": "Up to [Install](#install) stays",
    }
    (tmp_path / "README.md").write_text("\n\n".join(cases) + "\n")
    out = subprocess.run(
        [sys.executable, "-m", "hatch_fancy_pypi_readme", "pyproject.toml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert [p for p in out.stdout.split("\n\n") if p.strip()] == [*cases.values()]


# --- the repository's own files: workflow, pre-commit, tox ------------------------------------


def tox_section(name: str) -> dict[str, list[str]]:
    """A tox.ini section, each value as its lines, with ``{[section]key}`` references resolved."""
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "tox.ini")

    def lines(section: str, key: str) -> list[str]:
        out: list[str] = []
        for line in ini[section][key].splitlines():
            line = line.strip()
            ref = re.fullmatch(r"\{\[([^\]]+)\](\w+)\}", line)
            out += lines(*ref.groups()) if ref else [line] if line else []
        return out

    return {key: lines(name, key) for key in ini[name]}


def tox_envlist() -> list[str]:
    """The ``[tox] envlist``, with ``name{a,b}`` expanded as tox does."""
    (envlist,) = [" ".join(tox_section("tox")["envlist"])]
    envs: list[str] = []
    for item in re.findall(r"(?:[^,\s{]|\{[^}]*\})+", envlist):
        parts = re.split(r"\{([^}]*)\}", item)
        choices = [[p] if i % 2 == 0 else [c.strip() for c in p.split(",")] for i, p in enumerate(parts)]
        envs += ["".join(combo) for combo in itertools.product(*choices)]
    return envs


def test_tox_envlist_is_what_the_repository_expects() -> None:
    envs = tox_envlist()
    assert {"core", "lint", "package", "pytorch_lightning", "lightning20", "lightning26"} <= set(envs)
    assert len(envs) == len(set(envs))


def workflow_jobs() -> tuple[str, list[tuple[str, str]]]:
    """The main Python version and every (tox environment, Python version) job of ci.yml, as GitHub expands them."""
    workflow = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())
    (job,) = workflow["jobs"].values()
    matrix = job["strategy"]["matrix"]
    (main_python,) = matrix["python"]
    jobs = [(env, main_python) for env in matrix["env"]]
    jobs += [(extra["env"], extra["python"]) for extra in matrix.get("include", [])]
    steps = job["steps"]
    (setup,) = [s for s in steps if s.get("uses", "").startswith("actions/setup-python@")]
    assert setup["with"]["cache"] == "pip" and setup["with"]["python-version"] == "${{ matrix.python }}"
    assert "tox.ini" in setup["with"]["cache-dependency-path"]  # a new pin gives a new cache
    assert any(s.get("run", "").endswith("tox run -e ${{ matrix.env }}") for s in steps)
    return main_python, jobs


def test_workflow_runs_each_tox_environment_once_and_the_core_on_every_python(
    metadata: email.message.Message,
) -> None:
    main_python, jobs = workflow_jobs()
    assert len(jobs) == len(set(jobs))
    assert [env for env, python in jobs if python == main_python] == tox_envlist()  # .ci/run's list
    assert {env for env, _ in jobs} == set(tox_envlist())
    classified = python_classifiers(metadata.get_all("Classifier") or [])
    assert sorted({python for env, python in jobs if env == "core"}, key=lambda v: int(v.split(".")[1])) == classified


def pre_commit_hooks() -> dict[str, dict[str, object]]:
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = {}
    for repo in config["repos"]:
        assert repo["repo"] == "local", "remote hook repositories pin versions tox.ini cannot see"
        for hook in repo["hooks"]:
            hooks[hook["id"]] = hook
    return hooks


def test_pre_commit_runs_what_tox_lint_runs() -> None:
    lint = tox_section("testenv:lint")
    pins = {re.split(r"[=<>!~\[ ]", dep, maxsplit=1)[0]: dep for dep in lint["deps"]}
    hooks = list(pre_commit_hooks().values())
    for command in lint["commands"]:
        matching = [h for h in hooks if command == h["entry"] or command.startswith(f"{h['entry']} ")]
        assert len(matching) == 1, f"no single hook runs `{command}` (tox -e lint)"
        (hook,) = matching
        tool = str(hook["entry"]).split()[0]
        assert pins[tool] in hook["additional_dependencies"], f"{hook['id']}: not the lint env's {pins[tool]}"
        operands = command.removeprefix(str(hook["entry"])).split()
        if hook.get("pass_filenames", True):
            # pre-commit hands over the changed files: exactly those below tox's operands
            files = re.compile(str(hook["files"]))
            for operand in operands:
                path = operand if "." in Path(operand).name else f"{operand}/x.py"
                assert files.search(path), f"{hook['id']} skips {operand}, which tox -e lint checks"
            assert not files.search("docs/x.py") and not files.search("setup.py")
        else:
            assert command == hook["entry"]
    # and no hook checks what the lint env does not
    assert len(hooks) == len(lint["commands"])


def test_pre_commit_mypy_sees_the_same_packages_as_tox_lint() -> None:
    lint = tox_section("testenv:lint")
    (mypy,) = [h for h in pre_commit_hooks().values() if str(h["entry"]).startswith("mypy ")]
    other_tools = {str(h["entry"]).split()[0] for h in pre_commit_hooks().values()} - {"mypy"}
    # the lint env installs the project (its dependencies) and its own deps; the hook lists both
    expected = {d for d in lint["deps"] if re.split(r"[=<>!~\[ ]", d, maxsplit=1)[0] not in other_tools}
    expected |= set(PYPROJECT["project"]["dependencies"])
    assert set(mypy["additional_dependencies"]) == expected  # type: ignore[arg-type]


def test_pre_commit_config_is_valid() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pre_commit", "validate-config", ".pre-commit-config.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def readme_command(comment: str) -> str:
    """The README's command line that ends with ``# comment``, without the comment."""
    (line,) = [line for line in (ROOT / "README.md").read_text().splitlines() if line.endswith(f"# {comment}")]
    return line.rsplit("  # ", 1)[0].strip()


def test_ci_runs_the_readmes_test_command() -> None:
    command = readme_command("the tests (what CI runs)")
    assert f"{command} || status=$?" in (ROOT / ".ci/run").read_text().splitlines()


@pytest.mark.parametrize("comment", ["the demo", "the tests (what CI runs)"])
def test_the_readmes_commands_install_into_a_virtual_environment(comment: str) -> None:
    # Debian's and Ubuntu's own python3 refuse `pip install` outside one (PEP 668)
    command = readme_command(comment)
    assert command.startswith("python3 -m venv .venv && .venv/bin/pip install ")
    assert " pip install" not in command.replace(".venv/bin/pip install", "")


def test_contributing_names_every_tox_environment() -> None:
    contributing = (ROOT / "CONTRIBUTING.md").read_text()
    missing = [env for env in tox_envlist() if env not in contributing]
    assert missing == [], f"CONTRIBUTING.md does not describe {missing}"


def install_lines_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("install_lines", ROOT / ".ci" / "install_lines.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_install_line_check_sees_every_documented_install() -> None:
    # `tox -e package` runs .ci/install_lines.py: each line it finds must resolve with pip
    found = install_lines_module().install_lines()
    assert found[("torch==2.13.0", "-e", ".[lightning]")].startswith("README.md:")  # the demo's line
    for extra in ("s3", "gcs", "azure"):
        assert found[("-e", f".[{extra}]")].startswith(("docs/remote.md:", "docs/cli.md:")), extra
    # a continued line is one command: the contributor set-up installs the moto server with s3fs
    (setup,) = [words for words in found if "pre-commit" in words]
    assert "moto[server]>=5" in setup and ".[lightning,s3,gcs,azure]" in setup


@pytest.mark.parametrize(
    ("lines", "resolved"),
    [
        # the extras of one project: each is within the line that asks for all of them
        ([("-e", ".[s3]"), ("-e", ".[s3,gcs]", "moto")], [("-e", ".[s3,gcs]", "moto")]),
        # a pin is a requirement of its own: the unpinned line is within the pinned one, not the reverse
        ([("torch==2.13.0", "-e", ".[lightning]"), ("-e", ".[lightning]")], [("torch==2.13.0", "-e", ".[lightning]")]),
        # an installed project is not an editable one, and another option is only covered by itself
        ([("-e", "."), (".",), ("--pre", "-e", ".")], [("-e", "."), (".",), ("--pre", "-e", ".")]),
        # the same requirements in another order: one resolution
        ([("a", "b"), ("b", "a")], [("a", "b")]),
    ],
)
def test_the_install_line_check_resolves_the_lines_no_other_line_contains(
    lines: list[tuple[str, ...]], resolved: list[tuple[str, ...]]
) -> None:
    module = install_lines_module()
    assert list(module.to_resolve({words: f"page:{i}" for i, words in enumerate(lines)})) == resolved
