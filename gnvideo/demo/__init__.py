"""The built-in main job: the synthetic motion dataset (:mod:`gnvideo.demo.synthetic`) and the BN-vs-GN runs on it
(:mod:`gnvideo.demo.runs`, ``gnvideo demo``), with a programmatic run API (:func:`fit_and_test`).

The run API is loaded on first access, so ``gnvideo.demo.synthetic`` (used by data_prep and dataset workers) does not
import jsonargparse or the models.
"""

_RUN_API = ("DemoNorm", "fit_and_test", "main", "parser", "run_demo")


def __getattr__(name: str):
    if name in _RUN_API:
        from . import runs

        return getattr(runs, name)
    raise AttributeError(f"module 'gnvideo.demo' has no attribute {name!r}")


__all__ = list(_RUN_API)
