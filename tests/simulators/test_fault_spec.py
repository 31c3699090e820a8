"""The fault spec grammar: what parses, its canonical form, and errors that say where and why."""

from __future__ import annotations

import pytest

from simulators.fault import Faults, FaultSpecError, parse_faults


def test_every_fault_parses_and_round_trips() -> None:
    spec = (
        "power-loss@65536,disconnect@1000,silent-after=2_000,corrupt-every=7,"
        "activation-fail,old-version-after-reboot,refuse-image,stuck,swap@4096,no-store,echo-hash,"
        "claim-full-resume,resume-by-mi,ignore-erase,activate-then-drop,flood-sof@8192,nak-forever,trickle=16"
    )
    faults = parse_faults(spec)
    assert faults == Faults(
        power_loss=65536,
        disconnect=1000,
        silent_after=2000,
        corrupt_every=7,
        activation_fail=True,
        old_version_after_reboot=True,
        refuse_image=True,
        stuck=True,
        swap=4096,
        no_store=True,
        echo_hash=True,
        claim_full_resume=True,
        resume_by_mi=True,
        ignore_erase=True,
        activate_then_drop=True,
        flood_sof=8192,
        nak_forever=True,
        trickle=16,
    )
    assert parse_faults(str(faults)) == faults
    assert parse_faults("") == Faults()
    assert parse_faults(" stuck , refuse-image ") == Faults(stuck=True, refuse_image=True)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("power-los@5", r"item 1 'power-los@5' at character 0: unknown fault 'power-los'; known: power-loss@N"),
        ("stuck,power-loss=5", r"item 2 'power-loss=5' at character 6: power-loss is written power-loss@N"),
        ("corrupt-every=1", r"corrupt-every must be at least 2, got 1"),
        ("disconnect@0", r"disconnect must be at least 1"),
        ("silent-after=ten", r"silent-after needs a whole number of bytes after '=', got 'ten'"),
        ("stuck=1", r"stuck is written stuck$"),
        ("stuck,,refuse-image", r"item 2 '' at character 6: expected NAME, NAME@N or NAME=N"),
        ("stuck,stuck", r"stuck is given twice"),
        ("swap=5", r"swap is written swap@N"),
        ("echo-hash@5", r"echo-hash is written echo-hash$"),
        ("flood-sof=5", r"flood-sof is written flood-sof@N"),
        ("Stuck", r"expected NAME"),
    ],
)
def test_bad_specs_say_what_and_where(spec: str, message: str) -> None:
    with pytest.raises(FaultSpecError, match=message):
        parse_faults(spec)


def test_simulator_doc_lists_every_fault_in_its_form() -> None:
    from pathlib import Path

    from simulators.fault import _FORMS

    doc = (Path(__file__).parents[2] / "docs" / "simulator.md").read_text()
    table = doc[doc.index("## Faults") :]
    listed = {line.split("`")[1] for line in table.splitlines() if line.startswith("| `")}
    parameter = {"corrupt-every": "K", "trickle": "B"}
    expected = {f"{name}{form}{parameter.get(name, 'N')}" if form else name for name, form in _FORMS.items()}
    assert listed == expected
