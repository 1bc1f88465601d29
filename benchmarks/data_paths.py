"""Where the benchmarks find their data: ``../shared/data`` beside the repository (never committed)."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
KOLEKTOR = SHARED_DATA / "kolektorsdd"
