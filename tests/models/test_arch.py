from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from se_search.errors import ArchitectureError
from se_search.models.arch import Architecture, SEChoice, resolve_architecture

SITES = [f"layer{i}.{j}" for i, n in zip(range(1, 5), (3, 4, 6, 3)) for j in range(n)]


@pytest.mark.parametrize(
    "text",
    [
        "standard:16",
        "pre:8",
        "post:2",
        "identity:32",
        "pre:8:max:hardsigmoid",
        "standard:16:none:tanh",
        "identity:4:none:relu",
        "none",
    ],
)
def test_compact_text_round_trips(text: str) -> None:
    assert str(SEChoice.parse(text)) == text
    assert SEChoice.parse(SEChoice.parse(text).to_dict()) == SEChoice.parse(text)


def test_none_carries_nothing_and_is_dropped() -> None:
    assert SEChoice("none", 16, "max", "hardsigmoid") == SEChoice("none")
    arch = Architecture({"layer1.0": "none", "layer1.1": "standard:16"})
    assert list(arch) == ["layer1.1"]
    assert arch.choice("layer1.0").is_none
    assert Architecture({"layer1.0": "none"}) == Architecture()


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("sideways:16", "unknown variant"),
        ("standard", "positive integer reduction"),
        ("standard:0", "positive integer reduction"),
        ("standard:x", "not an integer"),
        ("standard:16:median", "unknown squeeze"),
        ("standard:16:avg:swish", "unknown gate 'swish'; choose one of sigmoid, hardsigmoid"),
        ("standard:16:mean", "unknown squeeze 'mean'; choose one of avg, max, none"),
        ("a:1:2:3:4", "VARIANT[:R"),
        ({"variant": "pre", "ratio": 4}, "may have 'reduction'"),
    ],
)
def test_bad_choices_say_what_to_write(value: object, fragment: str) -> None:
    with pytest.raises(ArchitectureError, match=fragment.replace("[", r"\[")):
        SEChoice.parse(value)  # type: ignore[arg-type]


def test_canonical_json_and_hash_ignore_how_it_was_written() -> None:
    a = Architecture({"layer2.0": "pre:8", "layer1.0": "standard:16", "layer3.0": "none"})
    b = Architecture(
        {"layer1.0": {"variant": "standard", "reduction": 16}, "layer2.0": SEChoice("pre", 8)}
    )
    assert a == b and hash(a) == hash(b) and a.hash == b.hash
    assert a.to_json() == (
        '{"layer1.0":{"gate":"sigmoid","reduction":16,"squeeze":"avg","variant":"standard"},'
        '"layer2.0":{"gate":"sigmoid","reduction":8,"squeeze":"avg","variant":"pre"}}'
    )
    assert (
        Architecture.uniform(SITES, "standard:16").hash
        != Architecture.uniform(SITES, "standard:8").hash
    )
    assert len({Architecture(), a, Architecture.uniform(SITES, "post:4")}) == 3


def test_hash_is_equal_in_a_subprocess() -> None:
    arch = Architecture({"layer1.0": "standard:16", "layer4.2": "identity:4:max:hardsigmoid"})
    code = (
        "from se_search.models.arch import Architecture;"
        "print(Architecture({'layer4.2': 'identity:4:max:hardsigmoid',"
        " 'layer1.0': 'standard:16'}).hash)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345"},
    )
    assert out.stdout.strip() == arch.hash


def test_presets() -> None:
    assert resolve_architecture("none", sites=SITES) == Architecture()
    paper = resolve_architecture("standard:16", sites=SITES)
    assert len(paper) == 16 and set(paper.values()) == {SEChoice("standard", 16)}
    assert paper.summary() == "standard:16 x16"


def test_json_file_and_inspect_output_are_accepted(tmp_path: Path) -> None:
    plain = tmp_path / "a.json"
    plain.write_text(
        json.dumps({"layer1.0": "standard:16", "layer4.2": {"variant": "pre", "reduction": 8}})
    )
    arch = resolve_architecture(str(plain), sites=SITES)
    assert arch.summary() == "layer1.0=standard:16, layer4.2=pre:8"
    wrapped = tmp_path / "b.json"
    wrapped.write_text(json.dumps({"architecture": arch.to_dict(), "params": 1}))
    assert resolve_architecture(str(wrapped), sites=SITES) == arch


def test_bad_json_files(tmp_path: Path) -> None:
    with pytest.raises(ArchitectureError, match="does not exist"):
        resolve_architecture(str(tmp_path / "missing.json"), sites=SITES)
    broken = tmp_path / "broken.json"
    broken.write_text('{"layer1.0": ')
    with pytest.raises(ArchitectureError, match=r"broken.json:1: not valid JSON"):
        resolve_architecture(str(broken), sites=SITES)
    wrong_site = tmp_path / "site.json"
    wrong_site.write_text('{"layer9.0": "standard:16"}')
    with pytest.raises(ArchitectureError, match=r"layer9.0.*valid sites are layer1.0"):
        resolve_architecture(str(wrong_site), sites=SITES)
    listing = tmp_path / "list.json"
    listing.write_text("[1, 2]")
    with pytest.raises(ArchitectureError, match="JSON object mapping sites"):
        resolve_architecture(str(listing), sites=SITES)


def test_bad_preset_names_the_forms() -> None:
    with pytest.raises(ArchitectureError, match="'standard:16', or the path of a JSON file"):
        resolve_architecture("se16", sites=SITES)


def test_public_api_is_lazy_and_complete() -> None:
    code = (
        "import sys, se_search;"
        "assert 'torch' not in sys.modules, 'import se_search pulled in torch';"
        "missing = [n for n in se_search.__all__ if getattr(se_search, n, None) is None];"
        "assert not missing, missing; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
