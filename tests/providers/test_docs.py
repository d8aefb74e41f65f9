"""docs/providers.md must document every setting, knob, fault, stat and error code of the layer."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import providers
from providers.fake._formats import FAULT_KINDS
from providers.fake._state import FakeConfig, FakeStats
from providers.fake.server import _parse_args

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "providers.md").read_text()


def _settings_variables() -> list[str]:
    source = (ROOT / "chatapp" / "settings.py").read_text()
    names = re.findall(r'env\.\w+\("([A-Z_]+)"', source)
    return [
        n for n in names if n.startswith(("DEMO_", "OPENAI_", "ANTHROPIC_", "PROVIDER_", "DEFAULT_PROVIDER"))
    ]


def test_the_settings_scan_finds_the_provider_variables() -> None:
    assert {"OPENAI_BASE_URL", "PROVIDER_MAX_RETRIES", "PROVIDER_IDLE_TIMEOUT_S"} <= set(
        _settings_variables()
    )


@pytest.mark.parametrize("variable", _settings_variables())
def test_environment_variable_documented(variable: str) -> None:
    assert f"`{variable}`" in DOC


@pytest.mark.parametrize("fault", sorted(FAULT_KINDS))
def test_fault_documented(fault: str) -> None:
    assert re.search(rf"\| `{fault}[`:\[]", DOC), fault


@pytest.mark.parametrize("field", [*FakeConfig.__dataclass_fields__, "next_faults", "clear_faults"])
def test_config_field_documented(field: str) -> None:
    assert f"`{field}`" in DOC


@pytest.mark.parametrize("key", sorted(FakeStats().to_json()))
def test_stats_key_documented(key: str) -> None:
    assert f"`{key}`" in DOC


@pytest.mark.parametrize("flag", [a for a in vars(_parse_args([])) if a != "host"])
def test_cli_flag_documented(flag: str) -> None:
    assert f"`--{flag.replace('_', '-')}`" in DOC


@pytest.mark.parametrize("header", ["X-Fake-TTFT-Ms", "X-Fake-TPS", "X-Fake-Tokens", "X-Fake-Fault"])
def test_header_documented(header: str) -> None:
    assert f"`{header}`" in DOC


@pytest.mark.parametrize(
    "error",
    [
        e
        for name in providers.__all__
        if isinstance(e := getattr(providers, name), type)
        and issubclass(e, providers.ProviderError)
        and e is not providers.ProviderError  # the abstract base is never raised
        and "code" in vars(e)
    ],
)
def test_error_code_documented(error: type[providers.ProviderError]) -> None:
    assert re.search(rf"`{error.__name__}`.*\| {error.http_status} \| `{error.code}` \|", DOC), error
