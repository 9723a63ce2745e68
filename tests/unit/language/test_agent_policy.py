"""Issue 11.5: a descriptor that reached an agent reads nothing of the agent's: no file
outside the built-in library (absolute, relative to the agent's working directory, ``..``),
no property or environment variable, not even LAZY ones for run time; and no error message
quotes what the submitter did not send."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdmesh.language import DescriptorError, resolve_file, resolve_text
from sdmesh.language.policy import agent_policy

SECRET = "sdmesh-test-secret-4f1c"
LIBRARY = Path(__file__).resolve().parents[3] / "descriptors"


def agent_errors(text: str, **sent: str) -> str:
    """The whole error text an agent would answer with (it must fail)."""
    with pytest.raises(DescriptorError) as info:
        resolve_text(text, "<pool p>", policy=agent_policy(sent))
    return info.value.format()


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    """A file only the agent could read: a cluster key look-alike, valid SmartFrog."""
    path = tmp_path / "cluster.key"
    path.write_text(f'key "{SECRET}";\nsfConfig extends {{ k "{SECRET}"; }}\n')
    return path


def test_include_of_an_agent_file_by_absolute_path_is_refused(secret_file: Path) -> None:
    for name in (str(secret_file), f"file:{secret_file}", f"file://{secret_file}"):
        shown = agent_errors(f'#include "{name}"\nsfConfig extends {{ }}\n')
        assert "neither in the built-in library nor among the files sent" in shown
        assert SECRET not in shown
    # the CLI, on the submitter's machine, still reads it
    assert SECRET in resolve_text(f'#include "{secret_file}"\n').to_sf()


def test_include_of_etc_shadow_neither_opens_nor_quotes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened: list[str] = []
    real_read = Path.read_bytes

    def spy(self: Path) -> bytes:
        opened.append(str(self))
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", spy)
    shown = agent_errors('#include "/etc/shadow"\n#include "/proc/kmsg"\nsfConfig extends { }\n')
    assert '"/etc/shadow" is neither in the built-in library' in shown
    assert '"/proc/kmsg" is neither' in shown
    assert "root:" not in shown
    assert not [p for p in opened if not p.startswith(str(LIBRARY.resolve()))]


def test_relative_include_never_resolves_against_the_agents_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "local.sf").write_text(f'leak "{SECRET}";\n')
    monkeypatch.chdir(tmp_path)
    shown = agent_errors('#include "local.sf"\nsfConfig extends { x leak; }\n')
    assert "local.sf" in shown and SECRET not in shown and str(tmp_path) not in shown
    # ..nor climb out of the library
    shown = agent_errors('#include "org/../../setup.cfg"\nsfConfig extends { }\n')
    assert "neither in the built-in library" in shown


def test_sdmesh_path_roots_are_not_searched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "extra.sf").write_text(f'leak "{SECRET}";\n')
    monkeypatch.setenv("SDMESH_PATH", str(tmp_path))
    shown = agent_errors('#include "extra.sf"\nsfConfig extends { x leak; }\n')
    assert SECRET not in shown and str(tmp_path) not in shown


def test_library_and_sent_files_still_include() -> None:
    for name in ("org/smartfrog/components.sf", "/org/smartfrog/components.sf"):
        text = f'#include "{name}"\nsfConfig extends Compound {{ x 1; }}\n'
        assert resolve_text(text, policy=agent_policy()).root.get("x") == 1
    sent = {"mine/base.sf": "Base extends { size 3; }\n"}
    text = '#include "mine/base.sf"\nsfConfig extends Base { }\n'
    assert resolve_text(text, policy=agent_policy(sent)).root.get("size") == 3


def test_envproperty_does_not_echo_the_agents_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SDMESH_TEST_SECRET", SECRET)
    shown = agent_errors("sfConfig extends { v ENVPROPERTY SDMESH_TEST_SECRET; }\n")
    assert "environment variable 'SDMESH_TEST_SECRET' is not set" in shown
    assert SECRET not in shown
    shown = agent_errors("sfConfig extends { home PROPERTY user.home; dir PROPERTY user.dir; }\n")
    assert "property 'user.home' is not set" in shown
    # on the submitter's side the CLI resolves them
    local = resolve_text("sfConfig extends { v ENVPROPERTY SDMESH_TEST_SECRET; }\n")
    assert local.root.get("v") == SECRET


def test_lazy_property_is_refused_on_the_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDMESH_TEST_SECRET", SECRET)
    shown = agent_errors(
        "sfConfig extends { a LAZY ENVPROPERTY SDMESH_TEST_SECRET; "
        "b [LAZY PROPERTY user.name]; c DATA PROPERTY x; }\n"
    )
    assert "LAZY ENVPROPERTY SDMESH_TEST_SECRET would read this agent's" in shown
    assert "LAZY PROPERTY user.name would read" in shown
    assert "PROPERTY x would" not in shown  # DATA is a value, never read
    assert SECRET not in shown


def test_values_sent_with_the_submission_are_used() -> None:
    resolved = resolve_text(
        "sfConfig extends { v ENVPROPERTY TOKEN; p PROPERTY who; }\n",
        environment={"TOKEN": "sent"},
        properties={"who": "me"},
        policy=agent_policy(),
    )
    assert (resolved.root.get("v"), resolved.root.get("p")) == ("sent", "me")


@pytest.mark.parametrize("path", sorted((LIBRARY / "examples").glob("*.sf")), ids=lambda p: p.name)
def test_cli_resolved_examples_resolve_the_same_on_an_agent(path: Path) -> None:
    resolved = resolve_file(path)
    again = resolve_text(resolved.to_sf(), "<pool p>", policy=agent_policy())
    assert again.digest() == resolved.digest()
