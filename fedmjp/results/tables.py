"""results.md: the tables and the caption that states their settings."""

from __future__ import annotations

from typing import Any

from ..scenario import Arm
from ..scoring.stats import ALPHA, CONFIDENCE, LOWER, NO_DIFFERENCE, TOO_FEW
from .dishonest import AS_MANY, FEWER, SHARE_MARGIN, imprint_readings
from .convergence import FACTOR, PSNR_MOVE, RESTARTS, SAMPLE_ARMS, SECURE_CLIENTS, SSIM_MOVE, verdict
from .judging import COLUMNS, defence_of, realism_rows, where_recognisability_stops
from ..scoring.reading import (CONTENT_NOT_REDUCED, EXACT_DB, MARGIN_DB, NO_REDUCTION, REDUCED, WITHIN_MARGIN,
                               WORST_NOT_REDUCED)
from .provenance import TOGETHER
from .realism import RECOGNISABLE_SSIM, RECOGNISABLE_WHY
from .secure import CLIENTS, secure_readings
from .settings import RUN_ORDER


def fmt(value: Any, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def render_markdown(data: dict[str, Any], table: list[dict[str, Any]], worst: list[dict[str, Any]],
                    figures: list[str], provenance: dict[str, Any], reference: str) -> str:
    lines = ["# fedmjp results: gradient leakage against accuracy", ""]
    lines += _provenance_lines(provenance)
    lines += ["## Leakage per arm and attack", "", caption(data, reference), ""]
    head = ["arm", "defence", "shuffled replies", "attack", "scored", *(h for h, _, _ in COLUMNS), "test top-1",
            "Δ PSNR vs ViT", "attack budget", "reading"]
    aligns = ["---", "---", "---:", "---"] + ["---:"] * (len(head) - 6) + ["---", "---"]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(aligns) + "|"]
    for row in table:
        cells = [row["arm"], row["defence"], row["shuffled"], row["attack"], str(row["count"]),
                 *(fmt(row[key], d) for _, key, d in COLUMNS), fmt(row["accuracy"], 3),
                 fmt(row["delta_psnr"], 2), row["budget"], row["note"]]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Strongest attack per arm", "",
              "Each arm's strongest attack (highest mean PSNR) against the ViT's strongest attack; the "
              "reading also names any other attack whose row above is flagged.", "",
              "| arm | strongest attack | PSNR mean (dB) | PSNR max | SSIM mean | patch-matched PSNR | test top-1 "
              "| Δ PSNR vs ViT | attack budget | reading |", "|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for row in worst:
        cells = [row["arm"], row["attack"] or "–", *(fmt(row[key], d) for _, key, d in COLUMNS),
                 fmt(row["accuracy"], 3), fmt(row["delta_psnr"], 2), row["budget"], row["note"]]
        lines.append("| " + " | ".join(cells) + " |")
    if data["dishonest"].get("rows"):
        lines += render_dishonest(data["dishonest"], data["arms"])
    if data["detector"]:
        lines += render_detector(data["detector"], data["arms"])
    if data["realism"]:
        lines += render_realism(data, realism_rows(data["realism"], reference))
    if data["secure"]:
        lines += render_secure(data["secure"])
    lines += render_convergence(data["convergence"])
    lines += ["", "## Figures", ""]
    lines += [f"![{name.removesuffix('.png').replace('_', ' ')}]({name})" for name in figures]
    lines += ["", "Run directories: `runs/privacy`, `runs/accuracy`, `runs/realism/CELL`, `runs/secure/attacks` and "
              "`runs/convergence/...` (audit records, metrics, resolved scenarios); `fedmjp audit runs/privacy` (or "
              "a cell's) shows the reconstructions.", ""]
    return "\n".join(lines)


def render_secure(part: dict[str, Any]) -> list[str]:
    """The secure-aggregation table, with the caption that states its setting."""
    acc = part["accuracy"]
    lines = ["", "## Through secure aggregation (Flower's SecAgg+)", "",
             f"Each row is one FedSGD round at init of K clients a round (of {max(CLIENTS)}) at the given batch size "
             "through Flower's SecAgg+ protocol (K = 1: one reply, no SecAgg+; Flower's protocol needs two). The "
             "server sees only the aggregate: passive, the privacy part's attacks on it (the strongest by mean "
             f"matched PSNR, at the privacy part's budget; the convergence part checks the cells of "
             f"{' and '.join(map(str, SECURE_CLIENTS))} clients at {FACTOR}x, and the attack budget column says "
             "what each figure rests on); imprint, a "
             "planting server that plants for every client and sets SecAgg+'s settings to suit its bins. Every "
             "client scores the reconstructions against its own batch; figures are means over the K clients. "
             f"Recognisable: mean SSIM >= {RECOGNISABLE_SSIM:g}. patches exact: share of a client's patches read at "
             ">= 40 dB.", "",
             "| arm | K | batch | attack | strongest | matched PSNR (dB) | SSIM | recognisable | patches exact "
             "| SecAgg+ settings | attack budget | reading |", "|---|---:|---:|---|---|---:|---:|---|---:|---|---|---|"]
    for row, reading in zip(part["rows"], secure_readings(part["rows"])):
        measured = "not_measured" not in row
        recognisable = "–" if not measured or row["recognisable"] is None else ("yes" if row["recognisable"] else "no")
        cells = [row["arm"], str(row["clients"]), str(row["batch"]), row["attack"], row.get("strongest", "–"),
                 fmt(row.get("psnr"), 2), fmt(row.get("ssim"), 3), recognisable,
                 fmt(row.get("patches_exact") if row["attack"] == "imprint" else None, 3),
                 row.get("settings") or ("–" if row["clients"] == 1 or not measured else "scenario"),
                 row.get("budget", "–"), reading]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Accuracy with SecAgg+ on (the accuracy part's ViT, seed {part.get('seed')}, Flower's settings): "
              f"{fmt(acc['secagg'], 3)} test top-1, against {fmt(acc['plain'], 3)} without it."]
    return lines


def render_dishonest(part: dict[str, Any], arms: dict[str, Any]) -> list[str]:
    """The dishonest server's table (imprint), with the caption that states its setting."""
    arm = Arm.model_validate(next(iter(arms.values())))
    own = arm.audit.server.images
    lines = ["", "## The dishonest server (imprint)", "",
             f"Instead of the round-1 global weights, the server sends weights it planted (imprint bins, thresholds "
             f"from {own.count} of its own `{own.source}` images, never a client's); the client computes one FedSGD "
             f"gradient of a seeded batch of its test split ({arm.data.source} data, {arm.model.name} depth "
             f"{arm.model.kwargs.get('depth', 'default')}, the arm's jigsaw and pruning applied) and the server "
             f"decodes the reply. Means over {part['trials']} batches per row. patches exact: share of the batch's "
             "true patches recovered at >= 40 dB PSNR, each matched once; placed: also at its true position; "
             "in image: share of the exact patches in the assembled images that sit in their own image (the "
             "planting's image signature groups them; MJP's shuffled ones are placed within their image by edge "
             "continuity); matched PSNR and SSIM: images assembled from the patches, matched one-to-one to the "
             "batch. Client check: "
             "planted models the client's model check (`guard.model_check`) refuses, of those sent. Reading: "
             f"\"{AS_MANY}\" where patches exact is within {SHARE_MARGIN:g} of the ViT's at the same batch size "
             f"(with fewer placed named); \"{FEWER}\" where it is lower.", "",
             "| arm | defence | batch | patches exact | placed | in image | matched PSNR (dB) | SSIM | client check "
             "| s per attack | reading |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row, reading in zip(part["rows"], imprint_readings(part["rows"])):
        measured = not row.get("not_applicable")
        cells = [row["arm"], defence_of(arms.get(row["arm"]) or {}), str(row["batch"]),
                 *(fmt(row.get(key) if measured else None, d) for key, d in
                   (("patches_exact", 3), ("patches_placed", 3), ("patches_in_image", 3), ("psnr", 2),
                    ("ssim", 3))),
                 f"{row['detected']}/{row['trials']}" if measured else "–",
                 fmt(row.get("seconds") if measured else None, 2), reading]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render_detector(part: dict[str, Any], arms: dict[str, Any]) -> list[str]:
    """The client's model check measured as a detector: plantings it must refuse, honest models it must not."""
    honest = part["honest"]
    lines = ["", "## The client's model check as a detector", "",
             f"Each planting is sent to a client in place of the privacy part's global weights at random init "
             f"(the arm's model and test split, one FedSGD gradient of a seeded batch, {part['trials']} trial(s) "
             "per row). Refused: by the original check (weight shape only), by the "
             "current check (`fedmjp.defences.model_check`: weight shape, ranges, and what the weights do to the client's "
             "batch) in a first round (no accepted weights), and by the current check with history (the honest "
             "weights accepted the round before). Patches exact: share of the batch's patches the server read at "
             ">= 40 dB had the client trained; when passed: the same over the trials the current check let "
             "through in a first round. A planter that knows a check plants past every test of it "
             "(`fedmjp.attacks.imprint_evasion`); trap weights are Boenisch et al.'s construction, built "
             "independently of ours.", "",
             "| construction | arm | batch | refused, original check | refused, first round | refused, with history "
             "| patches exact | when passed | tests that fired (first round) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for row in part["plantings"]:
        if row.get("not_applicable"):
            lines.append(f"| {row['construction']} | {row['arm']} | {row['batch']} | – | – | – | – | – | "
                         f"not applicable: {row['not_applicable']} |")
            continue
        n = row["trials"]
        fired = ", ".join(f"{test} ({count})" for test, count in sorted(row["fired"].items())) or "none"
        lines.append(f"| {row['construction']} | {row['arm']} | {row['batch']} | {row['refused_original']}/{n} | "
                     f"{row['refused_first']}/{n} | {row['refused_history']}/{n} | {fmt(row['patches_exact'], 3)} | "
                     f"{fmt(row['patches_when_passed'], 3)} | {fired} |")
    lines += ["", f"False alarms of the current check over {honest['models']} honest models, each checked on a "
              f"seeded batch of {part['honest_batch']} of its arm's test images: {honest['false_alarms']} in a first "
              f"round; {honest['false_alarms_history']} of the {honest['with_history']} checked with history.", "", "| honest models | checked | false alarms, first round | with history | "
              "false alarms, with history |", "|---|---:|---:|---:|---:|"]
    for source, entry in honest["by_source"].items():
        learned = entry.get("top1") or []
        runs = "; ".join(f"{first:.3f} → {last:.3f}" for first, last in zip(learned[::2], learned[1::2]))
        lines.append(f"| {source}{f' (test top-1, first → last round, per arm: {runs})' if runs else ''} | "
                     f"{entry['models']} | {entry['false_alarms']} | {entry['with_history']} | "
                     f"{entry['false_alarms_history']} |")
    if honest["fired"]:
        lines += ["", "Tests that fired on honest models: " + ", ".join(
            f"{name} ({count})" for name, count in sorted(honest["fired"].items())) + "."]
    lines += ["", "Largest |entry| per tensor kind over the honest models (the check's ranges must exceed them): " +
              ", ".join(f"`{kind}` {value:.3g}" for kind, value in honest["largest"].items()) + "."]
    return lines


def render_realism(data: dict[str, Any], table: list[dict[str, Any]]) -> list[str]:
    """The grid of where users train, its caption (settings read from the cells' run directories) and where
    the strongest attack's reconstructions stop being recognisable."""
    part = data["realism"]
    resolved = [Arm.model_validate(arm) for name in part["cells"] for arm in part["resolved"][name].values()]
    arm = next((a for a in resolved if a.training.mode == "fedavg"), resolved[0])
    t = arm.training
    budgets = "; ".join(f"{mode}: {_attack_budget([a for a in resolved if a.training.mode == mode])}"
                        for mode in ("fedsgd", "fedavg") if any(a.training.mode == mode for a in resolved))
    tops = ", ".join(f"{a} {v[min(v)]:.3f}" for a, v in (data["accuracy"] or {}).items()
                     if a in part["arms"] and v)
    grey = part.get("grey_ssim")
    lines = ["", "## Leakage where users train", "",
             f"The arms {', '.join(part['arms'])} over batch size x local training x stage ({part['setting']} setting), "
             f"one attacked round per cell in this process (the Flower round's arithmetic, `runs/realism/CELL`). "
             f"{arm.data.source} data, {model_words(arm)} (the accuracy part's model, at both stages); every "
             f"client holds {part['examples']} training examples; FedSGD: one gradient of a batch of them; FedAvg: "
             f"one local epoch over all of them ({t.optimizer}, lr {t.lr:g}, momentum {t.momentum:g}), the settings "
             f"the client reports and the replaying attacker uses. Attacked per cell and arm, by every passive "
             f"attack that applies (april's closed form at FedSGD batch 1 only): {budgets}. init: the seeded "
             "random initialisation; trained: the accuracy part's final "
             "weights of the same arm, first seed" + (f" (test top-1 {tops})" if tops else "") + ". "
             "Reconstructions are matched one-to-one to the client's images before every metric; the row is the "
             "arm's strongest attack in the cell (highest mean matched PSNR). Leakage: PSNR over the mid-grey "
             "baseline. Reading: against the ViT's strongest attack in the same cell, as in the first table. "
             f"Recognisable: mean SSIM >= {RECOGNISABLE_SSIM:g}. Why that rule: {RECOGNISABLE_WHY}"
             + (f" Here the mid-grey image scores SSIM {grey:.3f} on average." if grey is not None else ""), "",
             "| stage | training | batch | arm | strongest attack | scored | matched PSNR (dB) | SSIM | LPIPS "
             "| leakage over grey (dB) | recognisable | s per attack | attack budget | reading |",
             "|---|---|---:|---|---|---:|---:|---:|---:|---:|---|---:|---|---|"]
    for row in table:
        recognisable = {True: "yes", False: "no", None: "–"}[row["recognisable"]]
        cells = [row["stage"], row["training"], str(row["batch"]), row["arm"], row["attack"] or "–", str(row["count"]),
                 fmt(row["psnr_mean"], 2), fmt(row["ssim_mean"], 3), fmt(row["lpips_mean"], 3),
                 fmt(row["leakage_mean"], 2), recognisable, fmt(row["seconds_mean"], 2), row["budget"], row["note"]]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Where reconstructions stop being recognisable (strongest attack per cell):", ""]
    lines += [f"- {line}" for line in where_recognisability_stops(table)]
    seconds = ", ".join(f"{name} {value:.0f}" for name, value in part["seconds"].items())
    lines += ["", f"Seconds per cell, every arm's round (the clients' training, the attacks, the scoring): {seconds}."]
    return lines


def render_convergence(checks: list[dict[str, Any]]) -> list[str]:
    """The convergence check: each optimisation attack of the privacy part, of the secure part's checked cells
    and of the grid's sampled cells at the published budget and at ``FACTOR`` times it (on a sample, with
    ``RESTARTS`` restarts too)."""
    lines = ["", "## Is the attacker converged?", "",
             f"A weak attacker reads as a strong defence. The privacy part and the secure part's passive cells of "
             f"{' and '.join(map(str, SECURE_CLIENTS))} clients a round ran again through Flower, and sampled "
             f"cells of the grid in this process, with {FACTOR} times every attack's budget: its steps (the "
             "adaptive attack's: its refinement rounds on one example, its gradient matching's steps on a batch) "
             "(the same seed, clients and replies; `runs/convergence/privacy`, `runs/convergence/secure`, "
             "`runs/convergence/CELL`). Converged: matched PSNR moved by less than "
             f"{PSNR_MOVE:g} dB and SSIM by less than {SSIM_MOVE:g}; still rising: the published figure is a lower "
             "bound on the leak; lower at 4x: not converged. Every optimisation-attack row that no check covers is "
             "a lower bound (the tables' attack budget column says which); so is a strongest-attack row where "
             "another attack of its cell and arm is still rising at 4x (it may overtake).",
             "",
             f"More restarts, on a sample (every restart is a whole attack, so not on every check): the privacy "
             f"part's {' and '.join(SAMPLE_ARMS)} arms and the grid's sampled cells ran again at {FACTOR}x with "
             f"{RESTARTS} restarts (the one of least gradient distance kept; `runs/convergence/restarts/...`), every "
             "attack that takes restarts (not the closed forms, nor the adaptive attack's refinement of one example, "
             "which starts from one noise draw). A sampled row is converged only if neither larger budget moved it "
             "past the bounds; a row without that column was checked with one restart only."]
    if not checks:
        return lines + ["", "Not run: every optimisation-attack row is a lower bound."]
    lines += ["", f"| part or cell | arm | attack | budget | PSNR (dB) | SSIM | budget x{FACTOR} | PSNR x{FACTOR} (dB) "
              f"| SSIM x{FACTOR} | budget with restarts | PSNR with restarts (dB) | SSIM with restarts | reading |",
              "|---|---|---|---|---:|---:|---|---:|---:|---|---:|---:|---|"]
    for c in checks:
        restarts = (f"{c['budget_restarts']} | {fmt(c['psnr_restarts'], 2)} | {fmt(c['ssim_restarts'], 3)}"
                    if "psnr_restarts" in c else "– | – | –")
        lines.append(f"| {c['cell']} | {c['arm']} | {c['attack']} | {c['budget']} | {fmt(c['psnr'], 2)} | "
                     f"{fmt(c['ssim'], 3)} | {c['budget_larger']} | {fmt(c['psnr_larger'], 2)} | "
                     f"{fmt(c['ssim_larger'], 3)} | {restarts} | {verdict(c)} |")
    return lines


def caption(data: dict[str, Any], reference: str) -> str:
    """What the table measures, with the settings read from the run directories."""
    privacy = _base_settings(data["arms"])
    text = (f"Leakage columns: the privacy part ({privacy}); every reply of every attacked round is attacked by the "
            "curious server, and the client that sent it scores the reconstruction against its own batch (PSNR, "
            "SSIM: higher is more leakage; max is the worst client and round; patch-matched PSNR counts content "
            "that leaked in the wrong place). Shuffled replies: of an MJP arm's attacked replies, how many the "
            "client computed with the jigsaw applied (the others are plain-ViT gradients). ")
    if data["accuracy"] is not None:
        seeds = len(data["curves"])
        text += (f"Test top-1: the accuracy part, the same arms and defences trained in a setting that learns "
                 f"({_base_settings(data['accuracy_arms'])}), final round on the held-out test split, mean over "
                 f"{seeds} seed{'s' if seeds != 1 else ''} (intervals and tests in accuracy.md); the privacy part's "
                 "batch-size-1 FedSGD (which APRIL's closed form needs) learns too little in a few rounds to "
                 "measure a cost. ")
    text += (f"Δ PSNR vs ViT: the arm's mean PSNR minus the `{reference}` arm's under the same attack (or, when "
             "that attack does not apply to the ViT, its strongest, named in brackets). Reading: "
             f"\"{NO_REDUCTION}\" where the mean PSNR is not below the ViT's; \"{WORST_NOT_REDUCED}\" where "
             f"the mean is below but the maximum is not, within {MARGIN_DB:g} dB or both at least {EXACT_DB:g} dB, "
             "i.e. exact (some replies leak as much as an "
             f"undefended ViT's); \"{CONTENT_NOT_REDUCED}\" where PSNR is lower but the patch-matched PSNR is not, "
             f"within {MARGIN_DB:g} dB or both exact (the patches leaked, in the wrong places); "
             f"\"{WITHIN_MARGIN}\" where the mean is less than {MARGIN_DB:g} dB below it; \"{REDUCED}\" where "
             "the mean, the maximum and the patch-matched PSNR are all lower by more than that.")
    return text


def model_words(arm: Arm) -> str:
    """The model and its architecture overrides, e.g. ``vit_tiny_patch4_32 (depth 4, patch_size 8)``."""
    kwargs = ", ".join(f"{k} {v}" for k, v in arm.model.kwargs.items())
    return f"{arm.model.name}" + (f" ({kwargs})" if kwargs else "")


def _base_settings(arms: dict[str, Any]) -> str:
    if not arms:
        return "no arms"
    arm = Arm.model_validate(next(iter(arms.values())))
    t, c = arm.training, arm.clients
    local = ", ".join([t.optimizer, f"lr {t.lr:g}", *(["cosine over rounds"] if t.lr_schedule == "cosine" else []),
                       *(["crops and flips"] if t.augment else [])])
    steps = "one step" if t.mode == "fedsgd" else f"{t.local_steps or t.local_epochs} local " \
        f"{'steps' if t.local_steps else 'epoch(s)'} ({local})"
    attacks = ", ".join(s.name + (f" {dict(s.options)}" if s.options else "") for s in arm.audit.attacks) or "none"
    return (f"{arm.data.source} data, {model_words(arm)}, {t.mode} batch {t.batch_size}, {steps}, {t.rounds} "
            f"round(s), {c.sampled_per_round} of {c.num_clients} clients per round; attacks: {attacks}")


ACCURACY_HEAD = ("arm", "seeds", "top-1 mean", "95% CI low", "95% CI high", "p vs ViT", "reading")


def render_accuracy(data: dict[str, Any], table: list[dict[str, Any]], figures: list[str],
                    provenance: dict[str, Any]) -> str:
    """accuracy.md: the accuracy part over seeds, with the rule that generates its readings."""
    seeds = sorted(data["curves"])
    lines = ["# fedmjp results: accuracy over seeds", ""]
    lines += _provenance_lines(provenance)
    lines += [f"Test top-1 of the global model after the last round, on the held-out test split, for each arm of "
              f"the accuracy part ({_base_settings(data['accuracy_arms'])}) over seeds {', '.join(map(str, seeds))}. "
              "A seed fixes the data split and the initial weights, the same for every arm. Mean and "
              f"{CONFIDENCE:.0%} confidence interval: Student's t over seeds. p vs ViT: two-sided paired t-test "
              "over the seeds (scipy), against the undefended ViT trained on the same split (named in the "
              f"reading when it is not `vit`). Reading: \"{NO_DIFFERENCE.format(n='n')}\" where p >= "
              f"{ALPHA:g}; \"{LOWER.format(alpha=ALPHA, n='n')}\" (or higher) where p < {ALPHA:g}; "
              f"\"{TOO_FEW.format(n='n')}\" with fewer than 2 paired seeds.", ""]
    lines += ["| " + " | ".join(ACCURACY_HEAD) + " |", "|---|---:|---:|---:|---:|---:|---|"]
    for row in table:
        cells = [row["arm"], str(row["seeds"]), fmt(row["mean"], 3), fmt(row["low"], 3), fmt(row["high"], 3),
                 fmt(row["p"], 3), row["reading"]]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Top-1 per arm and seed", "", "| arm | " + " | ".join(f"seed {s}" for s in seeds) + " |",
              "|---|" + "---:|" * len(seeds)]
    for row in table:
        lines.append(f"| {row['arm']} | " + " | ".join(fmt(row["per_seed"].get(str(s)), 3) for s in seeds) + " |")
    lines += ["", *(f"![{name.removesuffix('.png').replace('_', ' ')}]({name})" for name in figures), "",
              "Run directories: `runs/accuracy/seed-S` (metrics per round, resolved scenarios).", ""]
    return "\n".join(lines)


def _run_position(part: str) -> int:
    return RUN_ORDER.index(part) if part in RUN_ORDER else len(RUN_ORDER)


def _attack_budget(arms: list[Arm]) -> str:
    """"2 replies, april, ig (steps 200, restarts 1)": what the cells of one training mode attacked."""
    replies = arms[0].clients.sampled_per_round
    specs = {s.name: s for a in arms for s in a.audit.attacks}
    return f"{replies} repl{'y' if replies == 1 else 'ies'}, " + ", ".join(
        name + (f" ({', '.join(f'{k} {v}' for k, v in spec.options.items())})" if spec.options else "")
        for name, spec in specs.items())


def _wall_times(provenance: dict[str, Any]) -> str:
    """Each part's minutes; parts that ran as one sweep once, with their shared time."""
    together = provenance.get(TOGETHER) or []
    shown = []
    for part, seconds in sorted((provenance.get("seconds") or {}).items(), key=lambda item: _run_position(item[0])):
        if part not in together:
            shown.append(f"{part} part {seconds / 60:.1f} min")
        elif part == together[0]:
            shown.append(f"{' and '.join(together)} parts {seconds / 60:.1f} min (one sweep of Flower runs)")
    return ", ".join(shown)


def _provenance_lines(provenance: dict[str, Any]) -> list[str]:
    if not provenance:
        return []
    machine_ = provenance.get("machine") or {}
    return [f"- command: `{provenance.get('command', '')}` ({provenance.get('setting', '')} setting)",
            f"- commit: `{provenance.get('commit', 'unknown')}`",
            f"- machine: {machine_.get('cpu', '?')}, {machine_.get('cores', '?')} cores, "
            f"{machine_.get('system', '')}, load average at start {machine_.get('load', '?')}",
            "- wall time: " + _wall_times(provenance),
            *(f"- {part} part run later: `{p['command']}` at commit `{p['commit']}`, load average at start {p['load']}"
              for part, p in (provenance.get("parts") or {}).items() if p["command"] != provenance.get("command")),
            ""]
