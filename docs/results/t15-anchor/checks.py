"""What the checks of one verified team run did, problem by problem (a record tool, not part of Conclave).

Reads the archived trajectories of the run (RUN/run.json names its run id) and prints each solver answer,
each check's verdict (as the executor judged it: contradicts, agrees, inconclusive) and the value it
computed, the evaluator's verdicts (blocked: an acceptance overruled by a contradicting check), the CEO's
decisions, and whether the CEO stopped while the latest check contradicted the answer.

    .venv/bin/python docs/results/t15-anchor/checks.py RUN --archive STATE_DIR/archive > RUN/checks.txt
"""

import argparse
import json
from collections import Counter
from pathlib import Path

from services.evaluation.graders import answers_match
from services.protocol import answers


def verdict(ex: dict) -> str:
    return "contradicts" if ex.get("contradicts") else "agrees" if ex.get("passed") else "inconclusive"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--archive", required=True)
    a = ap.parse_args()
    run_id = json.loads((Path(a.run) / "run.json").read_text())["run_id"]
    total: Counter[str] = Counter()
    for f in sorted(Path(a.archive).glob(f"*-{run_id}-*.json")):
        d = json.loads(f.read_text())
        ref, res = d["problem"]["reference_answer"], d["result"]
        print(f"== {f.stem.rsplit('-', 1)[-1]}  reference {ref}  final {res['extracted_answer']}  "
              f"stop {res['stop_reason']}")
        for m in d["messages"]:
            if m["role"] == "ROLE_SOLVER":
                ans = answers.extract_answer(m["call"]["visible_text"], "math") or ""
                print(f"   solver turn {m['turn']}: {ans!r} {'right' if answers_match('math', ans, ref) else 'wrong'}")
        for i, ex in enumerate(d["executions"], 1):
            v = verdict(ex)
            total[v] += 1
            first = ex["output"].splitlines()[0][:100] if ex.get("output") else ""
            print(f"   check {i}: {v}, computed {ex.get('check_answer', '')!r}: {first!r}")
        for ev in d["evaluations"]:
            print(f"   evaluator: correctness {ev.get('correctness', 0)}"
                  + (", blocked by the check" if ev.get("blocked") else "")
                  + (", parse fallback" if ev.get("fallback") else ""))
        for dec in d["decisions"]:
            print(f"   CEO turn {dec['turn']}: {dec['action'].removeprefix('ACTION_').lower()}")
        ex = d["executions"]
        if res["stop_reason"] == "ceo_stop" and ex and ex[-1].get("contradicts"):
            total["ceo_stop_on_contradicted"] += 1
            print("   ** the CEO stopped while the latest check contradicted the answer")
    print("checks:", ", ".join(f"{k} {total[k]}" for k in ("contradicts", "agrees", "inconclusive")),
          f"; CEO stops while the latest check contradicted: {total['ceo_stop_on_contradicted']}")


if __name__ == "__main__":
    main()
