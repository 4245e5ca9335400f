"""The built-in main job: the BN-vs-GN runs on the synthetic motion dataset (:mod:`gnvideo.demo.runs`,
``gnvideo demo``) with a programmatic run API (:func:`fit_and_test`). The dataset itself is
:mod:`gnvideo.data.synthetic`."""

from .runs import DemoNorm, fit_and_test, main, parser, run_demo

__all__ = ["DemoNorm", "fit_and_test", "main", "parser", "run_demo"]
