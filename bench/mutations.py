"""Mutation check of the channel rules: apply each one-line mutation, run the tests that pin
the rules, and show that they fail. Run on demand: ``python bench/mutations.py``; it exits 1
if a mutation survives (the tests miss a row). Restores every file, even when interrupted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ["tests/test_rules_table.py", "tests/test_engine.py", "tests/test_store_faults.py"]

# (what the mutation breaks, file, original text, mutated text)
MUTATIONS: list[tuple[str, str, str, str]] = [
    ("recover_threshold ignored", "camwatch/rules/states.py",
     "st.oks >= policy.recover_threshold", "st.oks >= 1"),
    ("offline reason does not follow the latest failure", "camwatch/rules/states.py",
     "st.reason = v.reason  # follow", "pass  # follow"),
    ("no counter reset on an unjudged verdict", "camwatch/rules/states.py",
     "st.fails = st.oks = 0", "pass"),
    ("flap release threshold changed", "camwatch/rules/states.py",
     "changes > policy.flap_max_changes // 2", "changes > policy.flap_max_changes"),
    ("failed writes not put back", "camwatch/book.py",
     "self._pending[:0] = transitions", "pass"),
    ("durable fields changed", "camwatch/book.py",
     "return (st.state, st.reason, st.since,", "return (st.state, st.since,"),
    ("host back-off never doubling", "camwatch/book.py",
     "h.backoff = min(h.backoff * 2, HOST_BACKOFF_MAX_S)",
     "h.backoff = min(h.backoff, HOST_BACKOFF_MAX_S)"),
    ("a flapping channel restored from the store is never released", "camwatch/book.py",
     "if (last is not None and last != v.ok) or st.flapping:",
     "if last is not None and last != v.ok:"),
    ("deeper source does not win", "camwatch/rules/sources.py",
     "if other > source and", "if other < source and"),
    ("evaluator commits before the store wrote", "camwatch/evaluator.py",
     "                await self.writer.run(lambda s: s.commit_outbox(items, now, meta))",
     "                self.writer.submit(lambda s: s.commit_outbox(items, now, meta))"),
]


def main() -> int:
    survived = []
    for what, rel, old, new in MUTATIONS:
        path = ROOT / rel
        original = path.read_text(encoding="utf-8")
        if original.count(old) != 1:
            print(f"?? {what}: the text to mutate is not in {rel} exactly once")
            survived.append(what)
            continue
        try:
            path.write_text(original.replace(old, new), encoding="utf-8")
            r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p",
                                "no:cacheprovider", *TESTS],
                               cwd=ROOT, capture_output=True, text=True)
        finally:
            path.write_text(original, encoding="utf-8")
        caught = r.returncode != 0
        print(f"{'caught  ' if caught else 'SURVIVED'} {what}")
        if not caught:
            survived.append(what)
    print(f"{len(MUTATIONS) - len(survived)} of {len(MUTATIONS)} mutations caught")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
