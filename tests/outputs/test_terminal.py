"""What the terminal shows explains itself: every mark a front table can print is in its
legend, and ``show`` spells each site's choice out in full."""

from __future__ import annotations

import io
import re

from rich.console import Console

from se_search.display import DISTURBED_MARK, TIE_MARK
from se_search.models.arch import SQUEEZE_GATE_MARK, Architecture, SEChoice
from se_search.models.variants import VARIANTS
from se_search.outputs.terminal import LEGEND, trial_table
from se_search.space import load_space


def _placement_marks(placement: str) -> set[str]:
    """The marks of a placement string besides ratios: variant codes, ``*``, ``|``."""
    return set(re.sub(r"[0-9 ]", "", placement))


def test_every_mark_a_front_table_can_print_is_in_its_legend() -> None:
    space = load_space(
        "resnet18",
        {"choices.squeeze": ["avg", "max"], "choices.gate": ["sigmoid", "hardsigmoid"]},
    )
    sites = [s.name for s in space.all_sites]
    codes = {name: v.code for name, v in VARIANTS.items()}
    arch = Architecture(
        {"layer1.0": "standard:8:max:hardsigmoid", "layer2.0": "pre:4", "layer3.1": "post:16",
         "layer4.0": "identity:2"}
    )  # fmt: skip
    marks = _placement_marks(arch.placement(sites))
    assert SQUEEZE_GATE_MARK in marks and "|" in marks  # the marks under test are printed
    printable = marks | set(codes.values()) | {TIE_MARK, DISTURBED_MARK, "±"}
    missing = [m for m in printable if m not in LEGEND]
    assert not missing, missing
    for name, code in codes.items():
        assert f"{code} {name}" in LEGEND  # each code with its meaning


def test_show_spells_each_sites_choice_out_in_full(searched) -> None:
    from se_search.storage.results import Results

    results = Results(searched.storage, searched.study_name)
    record = next(c for c in results.store.candidates(searched.study_name) if c.architecture)
    record = results.trial(record.trial_number)
    [table, *_] = trial_table(record)
    out = io.StringIO()
    Console(file=out, width=200).print(table)
    text = out.getvalue()
    for header in ("variant", "ratio", "squeeze", "gate"):
        assert header in text
    for site, stored in record.architecture.items():
        choice = SEChoice.parse(stored)
        line = next(line for line in text.splitlines() if f" {site} " in line)
        assert choice.variant in line and f" {choice.reduction} " in line
        assert f" {choice.squeeze} " in line and f" {choice.gate} " in line
