"""The verdict rules every report states, and their words: noise, best of all, divergence, tuning/validation.

* **Noise rule** (``compare``): a difference counts only beyond NOISE_FACTOR x the combined split-half
  noise sqrt(noise_a^2 + noise_b^2); smaller ones are ties.
* **Best of all** (``is_best``): a good run at or below the lowest score of every built-in sampler of
  the point (other EVODiff samplers are no rivals); no noise check.
* **Diverged** (``is_diverged``): FD above BASELINE's at the same point, or a non-finite or failed run.
Renderers take the outcomes and their words (SET_WORDS, OUTCOMES, ...) from here and only lay them out.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from .common import EVODIFF_PREFIX, fmt, is_evodiff, md_table
from .metrics import metric_score

BASELINE = "euler"     # a sampler worse than this one at the same NFE has diverged
RIVAL = "dpmpp_2m"     # what EVODiff is judged against
NOISE_FACTOR = 2.0     # a difference counts when it exceeds this many combined split-half noise SEs
BEST_NFES = (5, 10)    # the stress run's "best of all" share is taken over NFEs in this range
SET_WORDS = {"tuning": "tuning set", "validation": "validation set"}
OUTCOMES = {"better": "won", "worse": "lost", "tie": "tie"}     # compare()'s words as a sampler's result


def good(record: dict) -> bool:
    """A run that can be scored."""
    return record["finite"] and record.get("error") is None


def score(record: dict, metric: str) -> float:
    """What a record is ranked by, lower is better; a failed run scores infinite."""
    return metric_score(metric, record[metric]) if good(record) and record[metric] is not None else math.inf


def compare(record: dict, rival: dict, metric: str) -> str:
    """'better', 'worse' or 'tie' by the noise rule."""
    noise = NOISE_FACTOR * math.hypot(record[f"{metric}_noise"], rival[f"{metric}_noise"])
    diff = metric_score(metric, record[metric]) - metric_score(metric, rival[metric])
    return "better" if diff < -noise else "worse" if diff > noise else "tie"


def outcome(record: dict, rival: dict, metric: str = "fd") -> str:
    """compare() in OUTCOMES's words; a failed run loses to a good one."""
    if not (good(record) and good(rival)):
        return "tie" if good(record) == good(rival) else ("won" if good(record) else "lost")
    return OUTCOMES[compare(record, rival, metric)]


def lowest(records, metric: str) -> float:
    return min((score(r, metric) for r in records), default=math.inf)


def is_best(record: dict, others: list[dict], metric: str) -> bool:
    """The one best-of-all rule."""
    return good(record) and bool(others) and score(record, metric) <= lowest(others, metric)


def rank(record: dict, others: list[dict], metric: str) -> int:
    """1 = best; no noise check."""
    return 1 + sum(score(o, metric) < score(record, metric) for o in others)


def is_diverged(record: dict, baseline: dict) -> bool:
    return not good(record) or good(baseline) and record["fd"] > baseline["fd"]


def by_point(records) -> dict[tuple, dict[str, dict]]:
    """{(cell, nfe_target): {sampler: record}}."""
    points: dict = {}
    for r in records:
        points.setdefault((r["cell"], r["nfe_target"]), {})[r["sampler"]] = r
    return points


def judge(records: list[dict], baseline: str = BASELINE, rival: str = RIVAL) -> list[dict]:
    """Add the verdicts to records (in place, also returned): diverged, and for EVODiff samplers vs_rival
    and best_of_all (by FD)."""
    for group in by_point(records).values():
        builtins = [o for n, o in group.items() if not is_evodiff(n)]
        for name, r in group.items():
            r["diverged"] = is_diverged(r, group[baseline]) if baseline in group else None
            if is_evodiff(name):
                r["vs_rival"] = outcome(r, group[rival]) if rival in group else None
                r["best_of_all"] = is_best(r, builtins, "fd")
    return records


def against(records: list[dict], other: str, sampler: str = EVODIFF_PREFIX) -> dict[str, list[str]]:
    """{outcome: ['<cell> @<NFE>', ...]}: ``sampler`` against ``other`` at every point both ran."""
    found = {"won": [], "tie": [], "lost": []}
    for (cell, nfe), group in by_point(records).items():
        if sampler in group and other in group:
            found[outcome(group[sampler], group[other])].append(f"{cell} @{nfe}")
    return found


def comparisons(records, metric: str, sampler: str, rival: str = RIVAL) -> dict[str, dict[str, list[int]]]:
    """{cell: {'better' | 'worse' | 'tie' | 'best' | 'measured': [NFE, ...]}} of sampler against rival;
    'best': where it is best of all."""
    out = {}
    for (cell, nfe), group in sorted(by_point(records).items(), key=lambda kv: kv[0][1]):
        found = out.setdefault(cell, {"better": [], "worse": [], "tie": [], "best": [], "measured": []})
        if sampler in group and rival in group:
            found[compare(group[sampler], group[rival], metric)].append(nfe)
            found["measured"].append(nfe)
            builtins = [r for name, r in group.items() if not is_evodiff(name)]
            if is_best(group[sampler], builtins, metric):
                found["best"].append(nfe)
    return {cell: out[cell] for cell in dict.fromkeys(r["cell"] for r in records)}


def tally(found: dict) -> dict[str, int]:
    """Counts of better / worse / tie over every cell of comparisons()."""
    return {k: sum(len(f[k]) for f in found.values()) for k in ("better", "worse", "tie")}


def too_noisy(count: dict[str, int]) -> bool:
    """Most points tie: the run cannot separate the samplers."""
    return count["tie"] * 2 > sum(count.values())


@dataclass
class Summary:
    """The counts a stress report leads with, and the points behind them (records through judge())."""
    sampler: str
    rival: str
    vs_rival: dict[str, int]
    best_of_all: int
    best_of_all_of: int
    best_nfes: list[int]
    diverged: dict[str, dict[str, int]]      # per sampler: points, of, cells, of_cells
    failed: list[tuple]                      # (sampler, cell, NFE, why)
    lost: list[str] = field(default_factory=list)            # '<cell> @<NFE>' where sampler lost to rival
    diverged_at: list[str] = field(default_factory=list)     # '<cell> @<NFE>' where sampler diverged
    worst_solution: dict | None = None       # cell, refinement_rms: the exact solution refinement moved most


def summarize(records: list[dict], refs: list[dict] = (), sampler: str = EVODIFF_PREFIX,
              best_nfes=BEST_NFES) -> Summary:
    mine = [r for r in records if r["sampler"] == sampler]
    in_range = [r for r in mine if best_nfes[0] <= r["nfe_target"] <= best_nfes[1]]
    diverged = {}
    for s in dict.fromkeys(r["sampler"] for r in records):
        rs = [r for r in records if r["sampler"] == s and r["diverged"] is not None]
        diverged[s] = dict(points=sum(r["diverged"] for r in rs), of=len(rs),
                           cells=len({r["cell"] for r in rs if r["diverged"]}),
                           of_cells=len({r["cell"] for r in rs}))
    point = lambda r: f"{r['cell']} @{r['nfe_target']}"    # noqa: E731
    worst = max(refs, key=lambda r: r["refinement_rms"]) if refs else None
    return Summary(
        sampler=sampler, rival=RIVAL, vs_rival=dict(Counter(r.get("vs_rival") for r in mine if r.get("vs_rival"))),
        best_of_all=sum(bool(r.get("best_of_all")) for r in in_range), best_of_all_of=len(in_range),
        best_nfes=list(best_nfes), diverged=diverged,
        failed=[(r["sampler"], r["cell"], r["nfe_target"], r["error"] or "non-finite output")
                for r in records if not good(r)],
        lost=[point(r) for r in mine if r.get("vs_rival") == "lost"],
        diverged_at=[point(r) for r in mine if r["diverged"]],
        worst_solution=worst and {k: worst[k] for k in ("cell", "refinement_rms")})


# the words

def entry(record: dict, value: str, column: list[dict], dagger: bool = True) -> str:
    """A table entry with the verdicts' marks: bold when best of its column, † diverged (with
    ``dagger``), ✗ failed, '@n' the NFE used when the target is not reachable (heun and friends)."""
    if not good(record):
        return "✗ err" if record.get("error") else "✗ non-finite"
    text = fmt(record[value])
    if record[value] is not None and is_best(record, column, value):
        text = f"**{text}**"
    if dagger and record.get("diverged"):
        text += " †"
    return text + (f" @{record['nfe']}" if record["nfe"] != record["nfe_target"] else "")


def pivot(records, value: str, key: str, cols=None, head=str, dagger: bool = True) -> str:
    """Rows = samplers, columns = the records' values of ``key`` (or ``cols``), entries by entry()."""
    cols = cols or list(dict.fromkeys(r[key] for r in records))
    at = {(r["sampler"], r[key]): r for r in records}
    column = {c: [r for r in records if r[key] == c] for c in cols}
    rows = [[s] + [entry(at[(s, c)], value, column[c], dagger) if (s, c) in at else "" for c in cols]
            for s in dict.fromkeys(r["sampler"] for r in records)]
    return md_table(["sampler", *map(head, cols)], rows, "l" + "r" * len(cols))


def nfe_words(nfes, measured=()) -> str:
    """[5, 6, 8] -> '5, 6 and 8 NFE'; three or more consecutive measured NFEs '5–20', all 'every NFE'."""
    nfes = sorted(nfes)
    if measured and nfes == sorted(measured):
        return "every NFE"
    position = {n: i for i, n in enumerate(sorted(measured or nfes))}
    runs = []
    for n in nfes:
        if runs and position[n] == position[runs[-1][-1]] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    items = [item for run in runs for item in ([f"{run[0]}–{run[-1]}"] if len(run) >= 3 else map(str, run))]
    return (", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else items[0]) + " NFE"


def in_words(found: dict) -> str:
    """One cell of comparisons() in words: 'better at 5–20 NFE; never worse'."""
    better, worse, measured = found["better"], found["worse"], found["measured"]
    if not better and not worse:
        return "no difference beyond noise"
    if not worse:
        return f"better at {nfe_words(better, measured)}" + ("" if better == measured else "; never worse")
    if not better:
        return f"worse at {nfe_words(worse, measured)}" + ("" if worse == measured else "; never better")
    return f"better at {nfe_words(better, measured)}; worse at {nfe_words(worse, measured)}"


def outcome_words(rs: list[dict]) -> list[str]:
    """One sampler's judged points in a cell: where it won, lost and tied, and where it was best of all."""
    measured = [r["nfe_target"] for r in rs if r.get("vs_rival")]
    at = lambda verdict: [r["nfe_target"] for r in rs if r.get("vs_rival") == verdict]  # noqa: E731
    parts = [f"{word} {nfe_words(at(verdict), measured)}" for verdict, word in
             (("won", "better at"), ("lost", "worse at"), ("tie", "no difference beyond noise at")) if at(verdict)]
    best = [r["nfe_target"] for r in rs if r.get("best_of_all")]
    if best:
        parts.append(f"lowest FD of all samplers at {nfe_words(best, [r['nfe_target'] for r in rs])}")
    return parts


def rules_text() -> str:
    return (f"Rules. Score: FD between a sampler's samples and the exact ODE solution's samples from the same "
            f"noise (raw 64 dims for the mixture, FeatureNet features for digits; guided cells against the exact "
            f"solution of the guided ODE D = D_u + w·(D_c − D_u)). *Diverged* (†): FD above {BASELINE}'s at the "
            f"same NFE, or a non-finite/failed run (✗). *{RIVAL} verdict*: a tie when |FD difference| ≤ "
            f"{NOISE_FACTOR:g} × sqrt(noise₁² + noise₂²) (split-half standard errors), otherwise won or lost. "
            f"*Best of all*: the lowest FD of every built-in sampler at that point (no noise check; other "
            f"EVODiff variants and earlier defaults are no rivals). "
            f"`@n`: the NFE actually used when the target is not reachable (heun and friends).")
