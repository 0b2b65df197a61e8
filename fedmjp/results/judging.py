"""Reading the run directories and judging the numbers: the words of a row are generated from them."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..audit.summary import read_records, summarize
from ..errors import InputError
from .accuracy import accuracy_runs, finals, read_curves, resolved_arms
from .budgets import LOWER_BOUND, attack_budgets
from .convergence import PRIVACY, SECURE, budget_reading, read_convergence, strongest_reading
from .detector import read_detector
from .dishonest import read_dishonest
from .realism import RECOGNISABLE_SSIM, read_realism
from .secure import ATTACKED, PART_DIR, cell_name, read_secure
from .settings import REFERENCE
from ..scoring.reading import FLAGS, REDUCED, judge, reference_for, strongest

ATTACK_ORDER = ("april", "ig", "adaptive")


# (header, summary key, decimals) of the leakage columns.
COLUMNS = (("PSNR mean (dB)", "psnr_mean", 2), ("PSNR max", "psnr_max", 2), ("SSIM mean", "ssim_mean", 3),
           ("patch-matched PSNR", "patch_psnr_mean", 2))


def collect(out: Path) -> dict[str, Any]:
    """The privacy part's summary, records and resolved arms, the accuracy part over its seeds, the dishonest
    server's part and the grid of where users train (each empty when it did not run)."""
    privacy_dir = out / "runs" / "privacy"
    if not (privacy_dir / "scenario.yaml").is_file():
        raise InputError(f"{out}: no privacy run directory (runs/privacy/scenario.yaml)")
    runs = accuracy_runs(out / "runs" / "accuracy")
    curves = read_curves(runs)
    realism = read_realism(out)
    checks = read_convergence(out)
    return {"privacy": summarize(privacy_dir), "arms": resolved_arms(privacy_dir), "records": read_records(privacy_dir),
            "accuracy": finals(curves) if runs else None, "curves": curves,
            "accuracy_arms": resolved_arms(next(iter(runs.values()))) if runs else {},
            "dishonest": read_dishonest(out), "detector": read_detector(out),
            "realism": realism | {"convergence": checks} if realism else realism, "convergence": checks,
            "secure": with_budgets(read_secure(out), checks, out)}


def with_budgets(secure: dict[str, Any], checks: list[dict[str, Any]], out: Path) -> dict[str, Any]:
    """The secure part's rows, each with what its strongest attack's figure rests on."""
    if not secure:
        return secure
    resolved = resolved_arms(out / PART_DIR / ATTACKED)
    rows = []
    for row in secure["rows"]:
        name = cell_name(row["arm"], row["clients"], row["batch"], row["attack"])
        budgets = attack_budgets(resolved.get(name) or {})
        budgeted = [a for a in row.get("attacks", []) if a in budgets]
        rows.append(row | {"budget": strongest_reading(checks, SECURE, name, row.get("strongest"), budgeted,
                                                       row.get("psnr"))})
    return secure | {"rows": rows}


def scored_budgeted(entry: dict[str, Any], arm: dict[str, Any]) -> list[str]:
    """An arm's optimisation attacks that scored (``entry``: its summary; ``arm``: its resolved scenario)."""
    budgets = attack_budgets(arm)
    return [a for a, stats in entry["attacks"].items() if a in budgets and "psnr_mean" in stats]


def privacy_budget(data: dict[str, Any], arm: str, attack: str | None) -> str:
    """What the privacy part's figure of this arm and attack rests on (:func:`.convergence.budget_reading`)."""
    takes_budget = attack in attack_budgets(data["arms"].get(arm) or {})
    return budget_reading(data["convergence"], PRIVACY, arm, attack, takes_budget)


def accuracy_of(data: dict[str, Any], arm: str) -> float | None:
    """Mean over seeds of the arm's final test top-1 in the accuracy part (None without one: the privacy
    part does not learn)."""
    by_seed = (data["accuracy"] or {}).get(arm)
    return sum(by_seed.values()) / len(by_seed) if by_seed else None


def ordered_attacks(attacks: dict[str, Any]) -> list[str]:
    return sorted(attacks, key=lambda a: (ATTACK_ORDER.index(a) if a in ATTACK_ORDER else len(ATTACK_ORDER), a))


def defence_of(arm: dict[str, Any]) -> str:
    """A short description of an arm's defence, from its resolved settings."""
    parts = []
    model = arm.get("model") or {}
    mjp = model.get("mjp")
    if str(model.get("name", "")).startswith("mjp_"):
        mjp = mjp or {}
        kind = "naive shuffle" if mjp.get("mode") == "naive" else "MJP"
        parts.append(f"{kind} ratio {mjp.get('ratio', 0.1):g}, p {mjp.get('apply_prob', 1.0):g}")
    if model.get("fixed_pos_embed"):
        parts.append("fixed sin-cos PE")
    defence = arm.get("defence") or {}
    if defence.get("dp"):
        dp = dict(defence["dp"])
        sensitivity = dp.get("sensitivity") or dp["clipping_norm"]
        std = sensitivity * math.sqrt(2 * math.log(1.25 / dp["delta"])) / dp["epsilon"]
        parts.append(f"local DP C {dp['clipping_norm']:g}, ε {dp['epsilon']:g}, σ {std:.2g}")
    if defence.get("prune"):
        parts.append(f"prune {defence['prune']:g}")
    return "; ".join(parts) or "none"


def shuffled_replies(data: dict[str, Any], arm: str) -> str:
    """"k/n": of the arm's n scored replies, k were computed with the jigsaw applied ("–" without MJP).

    With ``apply_prob`` < 1 some replies are plain-ViT gradients; this says how many the table saw.
    """
    if not str((data["arms"].get(arm) or {}).get("model", {}).get("name", "")).startswith("mjp_"):
        return "–"
    # Scored records only: the client's receipt, which says whether it shuffled, comes with the score.
    replies = {(r.round, r.partition_id): any(r.shuffled_steps) for r in data["records"]
               if r.arm == arm and r.source == "server" and r.status == "scored"}
    return f"{sum(replies.values())}/{len(replies)}"


def rows(data: dict[str, Any], reference: str = REFERENCE) -> list[dict[str, Any]]:
    """One row per arm and attack with everything the table shows (numbers unformatted)."""
    arms = data["privacy"]["arms"]
    ref_attacks = (arms.get(reference) or {}).get("attacks") or {}
    out = []
    for arm, entry in arms.items():
        shuffled = shuffled_replies(data, arm)
        for attack in ordered_attacks(entry["attacks"]) or ["(none)"]:
            stats = entry["attacks"].get(attack) or {}
            ref_name = reference_for(ref_attacks, attack)
            ref = ref_attacks.get(ref_name) if ref_name else None
            delta = None
            if arm != reference and ref and "psnr_mean" in stats and "psnr_mean" in ref:
                delta = stats["psnr_mean"] - ref["psnr_mean"]
            note = judge(stats, ref, arm == reference)
            if note in (*FLAGS, REDUCED) and ref_name != attack:
                note += f" ({ref_name})"
            out.append({"arm": arm, "attack": attack, "defence": defence_of(data["arms"].get(arm) or {}),
                        "shuffled": shuffled, "count": stats.get("count", 0),
                        **{key: stats.get(key) for _, key, _ in COLUMNS},
                        "accuracy": accuracy_of(data, arm), "delta_psnr": delta, "vs": ref_name,
                        "budget": privacy_budget(data, arm, attack if "psnr_mean" in stats else None), "note": note})
    return out


def worst_rows(data: dict[str, Any], per_attack: list[dict[str, Any]], reference: str = REFERENCE
               ) -> list[dict[str, Any]]:
    """Per arm, its strongest attack against the ViT's strongest: the honest headline.

    ``per_attack`` is ``rows(data, reference)``: its flagged readings are named beside the headline.
    """
    arms = data["privacy"]["arms"]
    ref_attacks = (arms.get(reference) or {}).get("attacks") or {}
    ref_name = strongest(ref_attacks)
    ref = ref_attacks.get(ref_name) if ref_name else None
    out = []
    for arm, entry in arms.items():
        name = strongest(entry["attacks"])
        stats = entry["attacks"].get(name) or {} if name else {}
        delta = stats["psnr_mean"] - ref["psnr_mean"] if (stats and ref and arm != reference) else None
        note = judge(stats, ref, arm == reference) if name else "nothing scored"
        # The strongest attack by mean PSNR can hide another attack's flag (a naive shuffle's april
        # leaks every patch, in the wrong places, at a mean PSNR no higher than ig's): name those too.
        flags = [f"{row['attack']}: {row['note']}" for row in per_attack
                 if row["arm"] == arm and row["attack"] != name and row["note"].startswith(FLAGS)]
        note = "; ".join(([note] if note else []) + flags)
        out.append({"arm": arm, "attack": name, "psnr_mean": stats.get("psnr_mean"), "psnr_max": stats.get("psnr_max"),
                    "ssim_mean": stats.get("ssim_mean"), "patch_psnr_mean": stats.get("patch_psnr_mean"),
                    "accuracy": accuracy_of(data, arm), "delta_psnr": delta,
                    "budget": strongest_reading(data["convergence"], PRIVACY, arm, name,
                                                scored_budgeted(entry, data["arms"].get(arm) or {}),
                                                stats.get("psnr_mean")),
                    "note": note})
    return out


def realism_rows(part: dict[str, Any], reference: str = REFERENCE) -> list[dict[str, Any]]:
    """Per cell and arm: its strongest attack (highest mean matched PSNR) and that attack's numbers, read
    from the cell's summary, judged against the ViT's strongest in the same cell."""
    out = []
    for name in part.get("cells", []):
        stage, training, batch = name.rsplit("-", 2)
        arms = part["summaries"][name]["arms"]
        ref_attacks = (arms.get(reference) or {}).get("attacks") or {}
        ref_name = strongest(ref_attacks)
        ref = ref_attacks.get(ref_name) if ref_name else None
        for arm, entry in arms.items():
            attack = strongest(entry["attacks"])
            stats = entry["attacks"][attack] if attack else {}
            ssim = stats.get("ssim_mean")
            budget = strongest_reading(part.get("convergence", []), name, arm, attack,
                                       scored_budgeted(entry, part["resolved"][name].get(arm) or {}),
                                       stats.get("psnr_mean"))
            out.append({"cell": name, "stage": stage, "training": training, "batch": int(batch.removeprefix("b")),
                        "arm": arm, "attack": attack, "count": stats.get("count", 0),
                        "psnr_mean": stats.get("psnr_mean"), "ssim_mean": ssim, "lpips_mean": stats.get("lpips_mean"),
                        "leakage_mean": stats.get("leakage_mean"), "seconds_mean": stats.get("seconds_mean"),
                        "recognisable": None if ssim is None else ssim >= RECOGNISABLE_SSIM, "budget": budget,
                        "note": judge(stats, ref, arm == reference) if attack else "nothing scored"})
    return out


def where_recognisability_stops(rows: list[dict[str, Any]]) -> list[str]:
    """One sentence per arm, training and stage: the batch sizes at which the strongest attack's images are
    recognisable (mean SSIM >= RECOGNISABLE_SSIM) and those at which they are not."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["arm"], row["training"], row["stage"]), []).append(row)
    lines = []
    for (arm, training, stage), group in groups.items():
        group = sorted(group, key=lambda r: r["batch"])
        yes = [r["batch"] for r in group if r["recognisable"]]
        no = [r["batch"] for r in group if r["recognisable"] is False]
        # A "not recognisable" from an attack that may not have converged is a lower bound on the leak.
        unsure = [r["batch"] for r in group if r["recognisable"] is False
                  and r.get("budget", "").startswith(LOWER_BOUND)]
        if not no:
            words = f"recognisable at every batch size measured ({', '.join(map(str, yes))})" if yes else \
                "nothing scored"
        elif not yes:
            words = f"not recognisable at any batch size measured ({', '.join(map(str, no))})"
        else:
            words = f"recognisable at batch {', '.join(map(str, yes))}; not at {', '.join(map(str, no))}"
        if unsure:
            words += (f" (at {', '.join(map(str, unsure))} the attack was not shown converged: more budget may make "
                      "it recognisable)")
        lines.append(f"{arm}, {training}, {stage}: {words}")
    return lines
