"""The differential harness: run one scenario against Apache Kafka and against Fjord, compare.

A scenario is a function of a `Target` that returns what a client observed, as plain data
(dicts, lists, numbers, strings). `compare` runs it against both and asserts the two results
are equal, except at the paths named in `differ`: each of those is a difference written down in
docs/compatibility.md, and is pinned to the exact values each broker gives, so the test fails
when either side changes.
"""

import os
import uuid

# What each differential test saw per broker: nodeid -> {"kafka": ok, "fjord": ok}; read by
# conftest.py for the compatibility table in docs/compatibility.md.
OUTCOMES = {}


def _current_test():
    return os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]


def unique(prefix):
    """A topic or group name no other test uses (both brokers live for the whole session)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _walk(a, b, path, out):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            p = f"{path}.{k}" if path else str(k)
            if k not in a:
                out.append((p, "<absent>", b[k]))
            elif k not in b:
                out.append((p, a[k], "<absent>"))
            else:
                _walk(a[k], b[k], p, out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            _walk(x, y, f"{path}[{i}]", out)
    elif a != b:
        out.append((path, a, b))


def differences(kafka, fjord):
    """[(path, kafka's value, fjord's value)] for every leaf where the two results differ."""
    out = []
    _walk(kafka, fjord, "", out)
    return out


def compare(both, scenario, *args, differ=None, **kwargs):
    """Runs `scenario(target, *args, **kwargs)` on Kafka then Fjord; asserts the same result.

    `differ` maps a path (as `differences` names it) to (kafka's value, fjord's value): a
    documented difference, checked exactly. Returns (kafka's result, fjord's result).
    """
    kafka, fjord = both
    seen = OUTCOMES.setdefault(_current_test(), {})
    seen["kafka"] = seen["fjord"] = False
    k = scenario(kafka, *args, **kwargs)
    seen["kafka"] = True
    f = scenario(fjord, *args, **kwargs)
    differ = dict(differ or {})
    found = differences(k, f)
    unexpected = []
    for path, kv, fv in found:
        if path in differ:
            assert (kv, fv) == differ.pop(path), f"documented difference at {path} changed"
        else:
            unexpected.append((path, kv, fv))
    assert not unexpected, "Fjord differs from Kafka:\n" + "\n".join(
        f"  {p}: kafka={kv!r} fjord={fv!r}" for p, kv, fv in unexpected)
    assert not differ, f"documented differences no longer seen: {sorted(differ)}"
    seen["fjord"] = True
    return k, f
