"""py-spy sampling of the services during a bench phase, and a summary of where time went.

Run ``python -m tests.bench.profiles <profile-*.txt>…`` on the raw files a ``--profile``
run leaves in its work directory to print each service's heaviest frames.
"""

from __future__ import annotations

import shutil
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from deploy.local.procs import Managed


def start_profiles(procs: Mapping[str, Managed], out_dir: Path, seconds: float) -> list[Managed]:
    """py-spy sampling each process for ``seconds``; raw stacks in ``profile-<name>.txt``."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("[bench] py-spy not installed (pip install py-spy); no profiles", flush=True)
        return []
    return [
        Managed.spawn(
            f"py-spy-{name}",
            [
                spy,
                "record",
                "--pid",
                str(proc.pid),
                "--format",
                "raw",
                "--rate",
                "50",
                "--duration",
                str(max(1, int(seconds))),
                "-o",
                str(out_dir / f"profile-{name}.txt"),
            ],
            log_file=out_dir / f"py-spy-{name}.log",
        )
        for name, proc in procs.items()
    ]


def heaviest(
    raw: str, *, prefixes: tuple[str, ...] = ("services/", "shared/"), top: int = 15
) -> tuple[int, list[tuple[float, str]]]:
    """(samples, [(share, frame)]) for the project's frames by inclusive share of samples.

    py-spy's raw format is one ``frame;frame;…;leaf count`` line per distinct stack.
    """
    total = 0
    inclusive: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        for frame in set(stack.split(";")):
            if any(prefix in frame for prefix in prefixes):
                inclusive[frame] += samples
    ranked = [(samples / total, frame) for frame, samples in inclusive.most_common(top)]
    return total, ranked


def main(paths: list[str]) -> int:
    missing = [path for path in paths if not Path(path).is_file()]
    if not paths or missing:
        print(
            "usage: python -m tests.bench.profiles <profile-*.txt>… (a --profile run writes"
            " them in each phase's directory of its work directory)"
            + (f"; not found: {', '.join(missing)}" if missing else ""),
            file=sys.stderr,
        )
        return 2
    for path in paths:
        total, ranked = heaviest(Path(path).read_text())
        print(f"== {path}: {total} samples")
        for share, frame in ranked:
            print(f"{share:6.1%}  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
