"""Five business hypotheses through the `business` profile, asked through the OpenAI-compatible door.

Needs a running stack (`conclave up`); prints one line per hypothesis and writes OUT (JSON) with every
report, its parsed verdict and confidence, and its token cost. Not part of `make bench`: on the CPU model a
run takes tens of minutes. Usage:
    python benchmarks/business_reports.py --url http://127.0.0.1:8090/v1 --out out/business.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import openai

HYPOTHESES = [
    "A subscription box of locally roasted coffee for offices in Oslo will reach 200 paying offices within "
    "12 months.",
    "Adding a free tier to our B2B invoicing SaaS (1,200 paying small businesses at EUR 29 a month) will raise "
    "paid sign-ups by 20% within 6 months.",
    "A second-hand marketplace for children's outdoor clothing in Norway can break even within 18 months on a "
    "12% commission.",
    "Replacing the first line of our call centre with an LLM chatbot will cut support costs by 40% without "
    "lowering customer satisfaction.",
    "An unstaffed 24/7 grocery store in a Norwegian village of 2,000 people will be profitable in its first year.",
]


async def ask(client: openai.AsyncOpenAI, text: str, options: dict) -> dict:
    started = time.monotonic()
    reply = await client.chat.completions.create(model="conclave-business",
                                                 messages=[{"role": "user", "content": text}],
                                                 extra_body={"conclave": options} if options else None)
    extra = reply.model_extra["conclave"]
    report = extra.get("report", {})
    print(f"{report.get('verdict') or '-':>13} conf {report.get('confidence', 0):.2f} "
          f"complete={report.get('complete')} {reply.usage.total_tokens} tokens "
          f"{time.monotonic() - started:.0f}s {extra['stop_reason']}: {text[:60]}", flush=True)
    return {"hypothesis": text, "answer": reply.choices[0].message.content, "usage": reply.usage.model_dump(),
            "wall_s": time.monotonic() - started, **extra}


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8090/v1")
    p.add_argument("--api-key", default="unused-on-loopback")
    p.add_argument("--out", type=Path, default=Path("out/business.json"))
    p.add_argument("--pick", default="", help="comma-separated indexes of HYPOTHESES to ask (default: all)")
    p.add_argument("--max-turns", type=int, default=0, help="override the profile's turns (0: the profile's)")
    args = p.parse_args()
    options = {"max_turns": args.max_turns} if args.max_turns else {}
    async with openai.AsyncOpenAI(base_url=args.url, api_key=args.api_key, timeout=7200, max_retries=0) as client:
        picked = [HYPOTHESES[int(i)] for i in args.pick.split(",")] if args.pick else HYPOTHESES
        rows = await asyncio.gather(*(ask(client, h, options) for h in picked))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1, ensure_ascii=False))
    print(f"{sum(r['usage']['total_tokens'] for r in rows)} tokens in all; reports in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
