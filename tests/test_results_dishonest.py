"""The dishonest server's part of the results: imprint against each arm, read against the ViT."""

from __future__ import annotations

import json

import pytest

from fedmjp.results.dishonest import AS_MANY, FEWER, imprint_readings, run_dishonest
from fedmjp.results.settings import DEFAULT_SCENARIO, load_part
from fedmjp.results.tables import render_dishonest


def _row(arm: str, batch: int, exact: float, placed: float, psnr: float = 20.0) -> dict:
    return {"arm": arm, "batch": batch, "trials": 2, "patches_exact": exact, "patches_placed": placed,
            "psnr": psnr, "seconds": 0.1, "detected": 2}


def test_readings_follow_the_numbers_against_the_vit_at_the_same_batch() -> None:
    rows = [_row("vit", 1, 0.99, 0.99), _row("vit", 8, 0.90, 0.90),
            _row("mjp-0.25", 1, 0.98, 0.75),  # contents read, positions hidden
            _row("mjp-0.25", 8, 0.93, 0.93),  # more than the ViT: no help at all
            _row("mjp-0.5", 8, 0.90, 0.45, psnr=17.5),  # contents read, images assembled less exactly
            _row("prune-0.9", 8, 0.10, 0.05),
            _row("naive-0.25", 32, 0.5, 0.4),  # no ViT row at batch 32
            {"arm": "fixed-pe", "batch": 1, "trials": 2, "not_applicable": "no pos_embed gradient"}]
    said = imprint_readings(rows)
    assert said[:2] == ["reference", "reference"]
    assert said[2].startswith(AS_MANY) and "fewer placed (0.75 vs 0.99)" in said[2]
    assert said[3] == AS_MANY
    assert said[4] == f"{AS_MANY}; fewer placed (0.45 vs 0.90): positions hidden, contents not; images less " \
        "exact (17.5 vs 20.0 dB)"
    assert said[5] == f"{FEWER} (0.10 vs 0.90)"
    assert said[6] == "–"
    assert said[7] == "not applicable: no pos_embed gradient"


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    """The quick setting's dishonest part on the built-in photos, four arms (about 10 s)."""
    scenario = load_part(DEFAULT_SCENARIO, "quick", "privacy",
                         ["data.source=photos", "data.root=null", "data.test_limit=40"],
                         ["vit", "mjp-0.25", "fixed-pe", "dp-eps1e4"])
    path = run_dishonest(scenario, tmp_path_factory.mktemp("dishonest"), "quick")
    arms = {name: arm.model_dump(mode="json") for name, arm in scenario.arms.items()}
    return json.loads(path.read_text()), arms


def test_imprint_reads_the_vit_and_mjp_alike_and_the_client_check_refuses_every_planted_model(
        measured: tuple[dict, dict]) -> None:
    part, _ = measured
    assert part["setting"] == "quick" and part["batches"] == [1, 8]
    cells = {(r["arm"], r["batch"]): r for r in part["rows"]}
    assert set(cells) == {(a, b) for a in ("vit", "mjp-0.25", "fixed-pe", "dp-eps1e4") for b in (1, 8)}
    for batch in (1, 8):
        vit, mjp = cells["vit", batch], cells["mjp-0.25", batch]
        # A 2-block ViT has two binning blocks: most of one image's patches, about half of eight images'.
        assert vit["patches_exact"] >= (0.8 if batch == 1 else 0.4)
        assert vit["patches_placed"] == vit["patches_exact"]
        # MJP hides where a quarter of the patches were, not what they held.
        assert abs(mjp["patches_exact"] - vit["patches_exact"]) <= 0.1
        assert mjp["patches_placed"] < mjp["patches_exact"]
        # The image signature says whose patch each read one is: nearly every one lands in its own image.
        assert vit["patches_in_image"] >= 0.95 and mjp["patches_in_image"] >= 0.95
        assert vit["detected"] == mjp["detected"] == 2
    assert "pos_embed" in cells["fixed-pe", 1]["not_applicable"]
    assert "not measured" in cells["dp-eps1e4", 1]["not_applicable"]


def test_the_table_states_its_setting_and_shows_not_applicable_rows_without_numbers(
        measured: tuple[dict, dict]) -> None:
    part, arms = measured
    lines = render_dishonest(part, arms)
    text = "\n".join(lines)
    assert "## The dishonest server (imprint)" in text
    assert "photos data, vit_tiny_patch4_32 depth 2" in text and "Means over 2 batches" in text
    rows = [line.split(" | ") for line in lines if line.startswith("| fixed-pe") or line.startswith("| vit")]
    assert len(rows) == 4
    fixed = next(r for r in rows if r[0] == "| fixed-pe")
    assert fixed[3:10] == ["–"] * 7 and fixed[10].startswith("not applicable")
    vit = next(r for r in rows if r[0] == "| vit" and r[2] == "1")
    assert vit[8] == "2/2" and vit[10] == "reference |"
