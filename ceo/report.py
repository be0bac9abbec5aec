"""The structured report of profiles like `business`: read it from the answer and check it, deterministically.

A report has five sections (Verdict, Confidence, Findings by domain, Key risks, Next experiments) and
ends with the line END OF REPORT. The end marker is how a report cut off by the token cap is told apart
from a finished one: a truncated report never reaches it. A report that fails the check is not accepted
(the CEO keeps the turn open, like failing tests), and the Result carries what was read as `Result.report`.
"""

from __future__ import annotations

import re

from conclave.v1 import outcome_pb2

END_MARKER = "END OF REPORT"
VERDICTS = ("supported", "not_supported", "uncertain")
# section key -> the header words that open it
SECTIONS = {
    "verdict": r"verdict",
    "confidence": r"confidence",
    "findings": r"(?:key\s+)?findings?(?:\s+(?:by|per)\s+domains?)?",
    "risks": r"(?:key\s+)?risks?",
    "experiments": r"(?:next\s+)?experiments?",
}
# A header is the section's name alone on its line or followed by a colon (markdown emphasis removed first),
# so a finding that starts with "Confidence in ..." is not taken for a header.
_HEADER = re.compile(r"^\s*(?:" + "|".join(f"(?P<{k}>{v})" for k, v in SECTIONS.items()) +
                     r")\s*(?::\s*(?P<rest>.*))?$", re.I)
_MARKUP = re.compile(r"\*\*|__|^\s*#{1,6}\s*")
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+(.+)$")
_DOMAIN = re.compile(r"^\s*(?:[-*•]|\d+[.)])?\s*(?:\*\*|__)?([A-Za-z][A-Za-z /&-]{1,40}?)(?:\*\*|__)?\s*[:–—]\s*(.+)$")


def _sections(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if _is_end(line):
            if found:
                break
            continue  # small models sometimes write the marker first; only one after the sections ends it
        m = _HEADER.match(_MARKUP.sub("", line))
        if m:
            current = next(k for k in SECTIONS if m.group(k))
            found.setdefault(current, [])
            rest = (m.group("rest") or "").strip(" :")
            if rest:
                found[current].append(rest)
        elif current and line.strip():
            found[current].append(_MARKUP.sub("", line).strip())
    return found


def _is_end(line: str) -> bool:
    return line.strip().upper().strip("*_ #.") == END_MARKER


def _verdict(lines: list[str]) -> str:
    text = " ".join(lines).lower()
    if re.search(r"\b(not\s+supported|unsupported|rejected)\b", text):
        return "not_supported"
    if re.search(r"\bsupported\b", text):
        return "supported"
    if re.search(r"\b(uncertain|inconclusive|unclear|mixed)\b", text):
        return "uncertain"
    return ""


def _confidence(lines: list[str]) -> float | None:
    m = re.search(r"(\d+(?:\.\d+)?)\s*(%?)", " ".join(lines))
    if not m:
        return None
    value = float(m.group(1))
    if m.group(2) or value > 1:
        value /= 100  # "70%" or "70" on a 0-100 scale
    return value if 0 <= value <= 1 else None


def _items(lines: list[str]) -> list[str]:
    bullets = [m.group(1).strip() for line in lines if (m := _BULLET.match(line))]
    return bullets or [line for line in lines if line]


def _ends_after_sections(text: str) -> bool:
    seen_section = False
    for line in text.splitlines():
        if _HEADER.match(_MARKUP.sub("", line)):
            seen_section = True
        elif seen_section and _is_end(line):
            return True
    return False


def parse(text: str) -> outcome_pb2.StructuredReport:
    """Reads a report; `complete` is False with `problems` naming each missing or unreadable part."""
    found = _sections(text)
    report = outcome_pb2.StructuredReport()
    problems = []
    for key in SECTIONS:
        if not found.get(key):
            problems.append(f"no '{key}' section" if key not in found else f"the '{key}' section is empty")
    if found.get("verdict"):
        report.verdict = _verdict(found["verdict"])
        if not report.verdict:
            problems.append(f"the verdict is none of {', '.join(VERDICTS)}")
    if found.get("confidence"):
        confidence = _confidence(found["confidence"])
        if confidence is None:
            problems.append("the confidence is not a number from 0 to 1")
        else:
            report.confidence = confidence
    for line in found.get("findings", []):
        m = _DOMAIN.match(line)
        domain, body = (m.group(1).strip(), m.group(2).strip()) if m else ("", line.strip("-*• "))
        report.findings.add(domain=domain, text=body)
    report.risks.extend(_items(found.get("risks", [])))
    report.experiments.extend(_items(found.get("experiments", [])))
    if not _ends_after_sections(text):
        problems.append(f"no '{END_MARKER}' line after the sections: the report was cut off or not finished")
    report.problems.extend(problems)
    report.complete = not problems
    return report
