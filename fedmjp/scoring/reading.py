"""How a defended arm's leakage reads against the undefended ViT's: the words of a results row and of the audit
report, generated from the numbers by one rule (PSNR: higher is more leakage)."""

from __future__ import annotations

from typing import Any

NO_REDUCTION = "no reduction vs ViT"
WORST_NOT_REDUCED = "worst case not reduced vs ViT"
CONTENT_NOT_REDUCED = "patch content not reduced vs ViT"
MARGIN_DB = 1.0
WITHIN_MARGIN = f"within {MARGIN_DB:g} dB of ViT"
REDUCED = "reduced vs ViT"
# At or above this PSNR a reconstruction is exact to 8-bit pixels: 94 dB and 100 dB are the same leak.
EXACT_DB = 60.0
FLAGS = (NO_REDUCTION, WORST_NOT_REDUCED, CONTENT_NOT_REDUCED, WITHIN_MARGIN)


def strongest(attacks: dict[str, Any]) -> str | None:
    """The attack with the highest mean PSNR among those that scored anything."""
    scored = {name: s for name, s in attacks.items() if s.get("count") and "psnr_mean" in s}
    return max(scored, key=lambda name: scored[name]["psnr_mean"]) if scored else None


def reference_for(ref_attacks: dict[str, Any], attack: str) -> str | None:
    """The ViT attack an arm's attack is compared with: the same one when it scored on the ViT, otherwise
    the ViT's strongest (an MJP-aware attacker facing a plain ViT is the plain attack)."""
    stats = ref_attacks.get(attack) or {}
    return attack if stats.get("count") and "psnr_mean" in stats else strongest(ref_attacks)


def not_reduced(value: float, reference: float) -> bool:
    return value > reference - MARGIN_DB or min(value, reference) >= EXACT_DB


def judge(stats: dict[str, Any], ref: dict[str, Any] | None, is_reference: bool) -> str:
    """The words for one row, generated from the numbers (PSNR: higher is more leakage)."""
    if not stats.get("count"):
        return f"not applicable ({stats.get('not_applicable', 0)} replies)" if stats.get("not_applicable") else \
            "nothing scored"
    if is_reference:
        return "reference"
    if not ref or "psnr_mean" not in ref or "psnr_mean" not in stats:
        return ""
    if stats["psnr_mean"] >= ref["psnr_mean"]:
        return NO_REDUCTION
    # Worst case and patch content: within MARGIN_DB, or both exact, counts as not reduced.
    if "psnr_max" in stats and "psnr_max" in ref and not_reduced(stats["psnr_max"], ref["psnr_max"]):
        return WORST_NOT_REDUCED
    if "patch_psnr_mean" in stats and "patch_psnr_mean" in ref \
            and not_reduced(stats["patch_psnr_mean"], ref["patch_psnr_mean"]):
        return CONTENT_NOT_REDUCED
    if stats["psnr_mean"] > ref["psnr_mean"] - MARGIN_DB:
        return WITHIN_MARGIN
    return REDUCED
