"""Program against prose on a few MATH-500 problems: how often the model is right when its answer is a
program's printed output (program-of-thought, run in the sandbox) rather than a prose chain of thought.

A measurement to choose the design of the `math500-grounded` profile (issue 15), not part of Conclave. It
talks to one model pod's OpenAI-compatible endpoint directly (no bus, no gateway), so it measures the
model and the prompts only:
- prose: the single agent's prompt (profile math500, `single`), graded as `conclave eval` grades it;
- program: the math500-grounded profile's check prompt (prompts/grounded/check.md: compute the answer
  from scratch, never shown a proposed one); the program runs in the sandbox (services.sandbox.run_python)
  and is read as that profile's executor reads it (services.agents.check.judge: its last `ANSWER:` line,
  else with check_last_line its last printed line; counted only where `computed` is set);
- check: the executor's check prompt (profile math500-verified) given the prose sample's answer, run
  and read as the executor reads it (services.agents.check.judge): the value a verified team's check
  computes, counted only where `computed` is set (ran cleanly, no echo, no template).

    python -m services.inference.pod_llamacpp --model qwen0.5b --port 8215 --parallel 4 --ctx 16384 &
    .venv/bin/python benchmarks/pot_anchor.py --pod http://127.0.0.1:8215 --limit 5 --samples 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import httpx

from services.agents.check import is_echo, judge
from services.evaluation.graders import answers_match
from services.evaluation.loaders import load_benchmark
from services.protocol import profile as profiles
from services.protocol.answers import extract_answer, extract_code
from services.sandbox import run_python


async def chat(client: httpx.AsyncClient, pod: str, messages: list[tuple[str, str]], max_tokens: int,
               temperature: float, top_p: float) -> tuple[str, int]:
    r = await client.post(f"{pod}/v1/chat/completions", json={
        "messages": [{"role": role, "content": text} for role, text in messages],
        "max_tokens": max_tokens, "temperature": temperature, "top_p": top_p}, timeout=600)
    r.raise_for_status()
    body = r.json()
    return body["choices"][0]["message"]["content"], body["usage"]["total_tokens"]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pod", default="http://127.0.0.1:8215")
    ap.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks")
    ap.add_argument("--limit", type=int, default=5)
    ap.add_argument("--samples", type=int, default=3, help="samples per problem and mode")
    ap.add_argument("--max-tokens", type=int, default=1024, help="the single agent's budget on the CPU stack")
    ap.add_argument("--concurrency", type=int, default=4, help="the pod's slots")
    ap.add_argument("--modes", default="prose,program,check", help="comma-separated: prose, program, check")
    ap.add_argument("--out", type=Path, default=None, help="write every sample as JSON lines here")
    a = ap.parse_args()
    a.modes = a.modes.split(",")
    items = load_benchmark("math500", a.data_dir)[: a.limit]
    prose = profiles.load("math500")
    grounded = profiles.load("math500-grounded")
    verified = profiles.load("math500-verified")
    gate = asyncio.Semaphore(a.concurrency)
    rows: list[dict] = []

    async def one(client: httpx.AsyncClient, item, mode: str, i: int) -> None:
        async with gate:
            if mode == "prose":
                msgs = prose.prompt("single").render(problem=item.text, answer_format=prose.answer_format)
            else:
                msgs = grounded.prompt("check").render(problem=item.text, answer="", solution="")
            text, tokens = await chat(client, a.pod, msgs, a.max_tokens, prose.temperature, prose.top_p)
        status, echo, computed, check = "", False, False, None
        if mode == "prose":
            answer = extract_answer(text, "math")
            if answer and "check" in a.modes:  # what a verified team's check would compute for this answer
                async with gate:
                    msgs = verified.prompt("check").render(problem=item.text, answer=answer, solution=text)
                    code_text, check_tokens = await chat(client, a.pod, msgs, a.max_tokens, prose.temperature, prose.top_p)
                code = extract_code(code_text) or ""
                run = await run_python(code)
                ex = judge("math", answer, run.status, run.stdout, run.stderr, code=code)
                value = ex.check_answer if ex.computed else ""
                check = {"id": item.id, "mode": "check", "sample": i, "answer": value, "tokens": check_tokens,
                         "right": bool(value) and answers_match("math", value, item.reference_answer or ""),
                         "status": run.status, "echo": is_echo(code), "text": code_text, "computed": ex.computed}
        else:
            code = extract_code(text) or ""
            run = await run_python(code)
            ex = judge("math", "", run.status, run.stdout, run.stderr, code=code, last_line=grounded.check_last_line)
            status, echo, computed = run.status, is_echo(code), ex.computed
            answer = ex.check_answer if computed else ""
        right = bool(answer) and answers_match("math", answer, item.reference_answer or "")
        rows.append({"id": item.id, "mode": mode, "sample": i, "answer": answer, "right": right, "tokens": tokens,
                     "status": status, "echo": echo, "text": text, "computed": computed})
        if check:
            rows.append(check)
        for r in [rows[-1]] if not check else rows[-2:]:
            print(f"{r['id']} {r['mode']:7s} s{i} {'RIGHT' if r['right'] else 'wrong'} {r['answer'][:60]!r} "
                  f"{r['status']} {'echo' if r['echo'] else ''} {r['tokens']} tok", flush=True)

    started = time.monotonic()
    async with httpx.AsyncClient() as client:
        await asyncio.gather(*(one(client, it, mode, i) for i in range(a.samples) for it in items
                               for mode in ("prose", "program") if mode in a.modes))
    print(f"\n{len(items)} problems x {a.samples} samples, {time.monotonic() - started:.0f} s")
    print("| problem | prose right | program right | program printed an answer | check computed | check right |\n"
          "|---|---|---|---|---|---|")
    for it in items:
        p = [r for r in rows if r["id"] == it.id and r["mode"] == "prose"]
        g = [r for r in rows if r["id"] == it.id and r["mode"] == "program"]
        c = [r for r in rows if r["id"] == it.id and r["mode"] == "check"]
        print(f"| {it.id} | {sum(r['right'] for r in p)}/{len(p)} | {sum(r['right'] for r in g)}/{len(g)} | "
              f"{sum(r['status'] == 'ok' and bool(r['answer']) for r in g)}/{len(g)} | "
              f"{sum(r['computed'] for r in c)}/{len(c)} | {sum(r['right'] for r in c)}/{len(c)} |")
    for mode in ("prose", "program", "check"):
        m = [r for r in rows if r["mode"] == mode]
        print(f"{mode}: {sum(r['right'] for r in m)}/{len(m)} right, "
              f"{sum(r['tokens'] for r in m) / max(len(m), 1):.0f} tokens per sample")
    if a.out:
        a.out.write_text("".join(json.dumps(r) + "\n" for r in sorted(rows, key=lambda r: (r["id"], r["mode"], r["sample"]))))


if __name__ == "__main__":
    asyncio.run(main())
