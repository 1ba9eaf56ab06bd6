"""The pytest plugin: ``pytest --policy FILE [--policy-profile P] [--policy-audit]
[--policy-report-json OUT] [--policy-suggest OUT]``. Loaded through the ``pytest11`` entry
point; imports nothing heavy unless ``--policy`` or ``--policy-suggest`` is given."""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .._runtime.compiles import ProgramCompiles
    from .._runtime.handle import PolicyHandle
    from .suggesting import Suggesting

_HANDLE: pytest.StashKey[PolicyHandle] = pytest.StashKey()
_SUGGEST: pytest.StashKey[tuple[Suggesting, str]] = pytest.StashKey()
_COMPILES: pytest.StashKey[ProgramCompiles] = pytest.StashKey()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("policycompile", "torch.compile policies")
    group.addoption("--policy", metavar="FILE", default=None, help="apply this policy first")
    group.addoption("--policy-profile", metavar="P", default=None, help="profile to select")
    group.addoption(
        "--policy-audit",
        action="store_true",
        default=False,
        help="record graph breaks the policy forbids instead of raising; fail the session if any",
    )
    group.addoption(
        "--policy-report-json", metavar="OUT", default=None, help="write the JSON report here"
    )
    group.addoption(
        "--policy-suggest",
        metavar="OUT",
        default=None,
        help="observe the session's torch.compile calls (in audit mode, under --policy if "
        "given) and write a suggested policy here (docs/suggest.md)",
    )


def pytest_configure(config: pytest.Config) -> None:
    path = config.getoption("--policy")
    suggest = config.getoption("--policy-suggest")
    if not path and not suggest:
        return
    from .._errors import PolicyError
    from .._policy.load import loads
    from .._runtime.api import apply

    # pytest_configure runs before collection imports the code under test
    try:
        if suggest:
            policy = path or loads("version: 1\ntargets: {}\n", path="<no policy>", profile="")
            handle = apply(policy, profile=config.getoption("--policy-profile") or "", audit=True)
        else:
            handle = apply(
                path,
                profile=config.getoption("--policy-profile"),
                audit=config.getoption("--policy-audit"),
            )
    except PolicyError as exc:
        # a usage error (exit 4, one line naming the file and line), not an INTERNALERROR
        raise pytest.UsageError(f"--policy: {exc}") from None
    config.stash[_HANDLE] = handle
    if suggest:
        from .suggesting import Suggesting

        suggesting = Suggesting(handle)
        suggesting.start()
        config.stash[_SUGGEST] = (suggesting, suggest)
    else:  # the tests' own torch.compile calls are regions of the report too
        from .._runtime.compiles import ProgramCompiles

        compiles = ProgramCompiles(handle.observer)
        compiles.install()
        config.stash[_COMPILES] = compiles


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None]:
    handle = item.config.stash.get(_HANDLE, None)
    if handle is not None:
        handle.observer.current_test = item.nodeid
    try:
        yield
    finally:
        if handle is not None:
            handle.observer.current_test = None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[None]:
    handle = item.config.stash.get(_HANDLE, None)
    if handle is not None and call.excinfo is not None:
        handle.record_exception(call.excinfo.value)
    yield


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    handle = session.config.stash.get(_HANDLE, None)
    if handle is None or not handle.audit or _SUGGEST in session.config.stash:
        return  # suggesting: the breaks are findings, not failures
    if not handle.report().passes and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    handle = config.stash.get(_HANDLE, None)
    if handle is None:
        return
    report = handle.report()
    terminalreporter.section("policycompile")
    terminalreporter.write(report.text())
    if handle.audit and report.violations:
        terminalreporter.write_line(
            f"policycompile audit: {len(report.violations)} graph break(s) the policy forbids",
            red=True,
        )
    if handle.audit and report.failures:
        terminalreporter.write_line(
            f"policycompile audit: {len(report.failures)} thing(s) could not be seen (NOT "
            "SEEN above): the audit cannot pass",
            red=True,
        )


def pytest_unconfigure(config: pytest.Config) -> None:
    handle = config.stash.get(_HANDLE, None)
    if handle is None:
        return
    out = _anchored(config, config.getoption("--policy-report-json"))
    if out:
        with open(out, "w", encoding="utf-8") as f:
            f.write(handle.report().to_json() + "\n")
    try:
        if _SUGGEST in config.stash:
            _write_suggestion(config, handle)
    finally:
        if _COMPILES in config.stash:
            config.stash[_COMPILES].uninstall()
            del config.stash[_COMPILES]
        handle.undo()
        del config.stash[_HANDLE]


def _write_suggestion(config: pytest.Config, handle: PolicyHandle) -> None:
    from . import suggest as write

    suggesting, out = config.stash[_SUGGEST]
    del config.stash[_SUGGEST]
    suggesting.stop()
    args = [a for a in config.invocation_params.args if isinstance(a, str)]
    findings = suggesting.findings(handle.report(), " ".join(["pytest", *args]))
    base = _anchored(config, config.getoption("--policy"))
    target = _anchored(config, out)
    assert target is not None
    write.write_checked(write.suggest(findings, out=target, base=base), target)


def _anchored(config: pytest.Config, path: str | None) -> str | None:
    """A path option from the directory pytest started in (a test may change directory)."""
    return None if not path else os.path.join(config.invocation_params.dir, path)
