"""Command-line tools that build and check datasets in the layout of :mod:`gnvideo.data.layout`.

Installed as ``gnvideo-prepare-kinetics``, ``gnvideo-check-videos`` and ``gnvideo-make-synthetic``; each also runs as
``python data_prep/<tool>.py`` or ``python -m data_prep.<tool>``.
"""
