"""``python -m gnvideo ...`` is the ``gnvideo`` command."""

from gnvideo.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
