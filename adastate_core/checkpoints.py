"""Small helpers shared by the DiT, VAE and text-encoder loaders."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence


def strip_prefixes(name: str, prefixes: Iterable[str]) -> str:
    """Remove any of `prefixes` from the start of `name`, repeatedly."""
    prefixes = tuple(prefixes)
    changed = True
    while changed:
        changed = False
        for prefix in prefixes:
            if name.startswith(prefix):
                name, changed = name[len(prefix) :], True
    return name


def shape_problems(
    expected: Mapping[str, Sequence[int]],
    found: Mapping[str, Sequence[int]],
    *,
    check_extra: bool = True,
    show: int = 6,
) -> list[str]:
    """What differs between the tensors a model needs and those a file holds, as phrases for
    an error message ("2 missing tensor(s): a, b", "shape mismatch: x [3] != [4]")."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected)) if check_extra else []
    wrong = sorted(k for k in set(expected) & set(found) if tuple(expected[k]) != tuple(found[k]))
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensor(s): {', '.join(missing[:show])}")
    if extra:
        problems.append(f"{len(extra)} unexpected tensor(s): {', '.join(extra[:show])}")
    if wrong:
        problems.append(
            "shape mismatch: "
            + ", ".join(f"{k} {list(found[k])} != {list(expected[k])}" for k in wrong[:4])
        )
    return problems
