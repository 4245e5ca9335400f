"""The DataModule's side of the run's broken videos (:mod:`gnvideo.data.broken_list`): attaching the run folder's list
to every dataset once a trainer is attached, carrying it in each checkpoint, and the count each split met.

:class:`BrokenVideoBookkeeping` is a mixin of :class:`gnvideo.data.datamodule.KineticsDataModule`: it uses the
DataModule's ``hparams`` (``decode_sandbox``, ``num_workers``), its four ``*_dataset`` attributes and ``trainer``.
"""

from __future__ import annotations

import logging
import os

from .broken_list import FILE_NAME as BROKEN_LIST_NAME
from .broken_list import BrokenVideoList
from .decode import sandbox_available
from .kinetics import ClipDataset

logger = logging.getLogger("gnvideo.data.datamodule")  # the DataModule's messages, under its name


class BrokenVideoBookkeeping:
    """Mixin: ``broken_list`` (the run folder's :class:`BrokenVideoList`, None until a trainer is attached),
    Lightning's ``state_dict``/``load_state_dict`` (the list in every checkpoint) and ``teardown`` (the counts)."""

    broken_list: BrokenVideoList | None = None

    def _datasets(self) -> list[ClipDataset]:
        return [ds for ds in (self.train_dataset, self.val_dataset, self.test_dataset, self.predict_dataset)
                if ds is not None]

    def _attach_broken_list(self, stage: str | None) -> None:
        """Once a trainer is attached: the run folder's broken-video list goes to every dataset (in a fit, the videos
        an earlier attempt of the run listed are broken from the start), and the decoding set-up is said once."""
        trainer = getattr(self, "trainer", None)
        run_dir = getattr(trainer, "log_dir", None)
        if run_dir is None:
            return
        if self.broken_list is None:
            self.broken_list = BrokenVideoList(os.path.join(run_dir, BROKEN_LIST_NAME))
            listed = self.broken_list.read()
            if listed:
                logger.info("%s: %d videos found broken earlier in this run are left out", self.broken_list.path,
                            len(listed))
            if not getattr(trainer, "is_global_zero", True):
                pass  # said once, by rank 0
            elif not self.hparams.decode_sandbox:
                where = "the main process" if int(self.hparams.num_workers) == 0 else "the DataLoader workers"
                logger.warning("data.decode_sandbox is off: videos are decoded in %s, where a decoder crash ends the "
                               "run and a hang stops it", where)
            elif not sandbox_available():
                logger.warning("decoding cannot be isolated here (no os.fork): a decoder crash ends the run and a "
                               "hang stops it")
        for ds in self._datasets():
            if ds.broken_list is None:
                training = stage == "fit" and ds in (self.train_dataset, self.val_dataset)
                ds.attach_broken_list(self.broken_list, skip_listed=training)

    def state_dict(self) -> dict:
        """``{"broken_videos": {path: reason}}``: the run's broken videos, saved with every checkpoint."""
        return {"broken_videos": self.broken_list.read() if self.broken_list is not None else {}}

    def load_state_dict(self, state_dict: dict) -> None:
        """A fit resumed from a checkpoint: the checkpoint's broken videos are broken in this run too (those of its
        datasets join the run folder's list). validate/test/predict of a checkpoint decode every video."""
        trainer = getattr(self, "trainer", None)
        if trainer is None or getattr(trainer.state, "fn", None) != "fit":
            return
        listed = dict(state_dict.get("broken_videos") or {})
        training = [ds for ds in (self.train_dataset, self.val_dataset) if ds is not None]
        ours = {p: r for p, r in listed.items() if any(ds.mark_broken([p]) for ds in training)}
        if ours and self.broken_list is not None:
            self.broken_list.add_all(ours)

    def teardown(self, stage: str | None = None) -> None:
        """Log how many broken videos each split met (each was named once, with its reason, when first met)."""
        for name in ("train", "val", "test", "predict"):
            ds = getattr(self, f"{name}_dataset")
            if ds is not None and ds.num_skipped:
                verb = "drawn again" if name == "train" else "not scored"
                per_item = ds.views_per_video if ds.mode == "test" else 1  # a test item holds all views of a video
                logger.warning("%s: %d broken videos, %d samples %s", name, len(ds.failed_videos),
                               ds.num_skipped * per_item, verb)


__all__ = ["BrokenVideoBookkeeping"]
