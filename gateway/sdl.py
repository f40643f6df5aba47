"""The schema as SDL, kept in the repository as gateway/schema.graphql.

python -m gateway.sdl           rewrite the file from the code
python -m gateway.sdl --check   exit 1 when the file and the code differ
"""

from __future__ import annotations

import sys
from pathlib import Path

from gateway.graphql.schema import build_schema

SDL_FILE = Path(__file__).parent / "schema.graphql"


def current_sdl() -> str:
    return build_schema().as_str().rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    sdl = current_sdl()
    if "--check" in args:
        if not SDL_FILE.exists() or SDL_FILE.read_text(encoding="utf-8") != sdl:
            print(f"{SDL_FILE} is out of date: run python -m gateway.sdl", file=sys.stderr)
            return 1
        return 0
    SDL_FILE.write_text(sdl, encoding="utf-8")
    print(f"wrote {SDL_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
