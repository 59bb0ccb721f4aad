"""A run from start to end: :meth:`Fitting.fit` locks the output folder, runs the epochs, stops cleanly on
Ctrl-C or SIGTERM, and reports the best model on the test split (:meth:`Fitting._finish`).

:class:`Fitting` is a part of :class:`~.trainer.Trainer`, which sets up what it uses.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import torch

from .components import describe_run
from .distributed import barrier, params_in_sync, run_on_main
from .run_folder import run_results


class Fitting:
    """The outer run of :class:`~.trainer.Trainer`: the lock, the signals, the epochs and the test report."""

    def request_stop(self) -> None:
        """Finish the current step, save ``last.pt`` and raise KeyboardInterrupt (what Ctrl-C does)."""
        self._stop_requested = True

    def fit(self) -> dict[str, Any]:
        """Train, then report on the test split. The output folder is locked meanwhile, and every way out
        (return, exception, Ctrl-C or SIGTERM) goes through one ``finally`` that closes TensorBoard, releases
        the lock and restores the signal handlers. Ctrl-C and SIGTERM (what schedulers send before preempting
        a job) inside the training loop finish the step and save first; outside it they stop at once."""
        stop_signals = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.getsignal(sig) for sig in stop_signals}
        main_thread = threading.current_thread() is threading.main_thread()
        if main_thread:
            signal.signal(signal.SIGTERM, _interrupt)
        try:
            run_on_main(lambda: self.folder.take(self._resumed_file), self.dist)
            self.log(describe_run(self.config, self.settings, self.bundle, self.model, self.steps_per_epoch))
            if main_thread:
                for sig in stop_signals:
                    signal.signal(sig, self._on_stop_signal)
            try:
                self._clock_zero = time.perf_counter() - self.elapsed  # a resumed run's clock goes on from its state
                while self.epoch < self.config.epochs and not self.budget_spent:
                    self._run_epoch()
            except KeyboardInterrupt:
                if self._step_active:  # a second Ctrl-C inside a step: the state is half-updated, keep the old file
                    self.log(f"stopped inside a step; {self._last_good_state()}")
                else:
                    self._save_state("last.pt")
                    self.log(f"interrupted: saved {self.output / 'last.pt'}; continue with the same command and "
                             "--resume")
                raise
            finally:
                if main_thread:
                    signal.signal(signal.SIGINT, previous[signal.SIGINT])
                    signal.signal(signal.SIGTERM, _interrupt)
            return self._finish()
        finally:
            self.folder.close_tensorboard()
            self.folder.release()
            if main_thread:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    def _on_stop_signal(self, signum, frame) -> None:
        if self._stop_requested:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self._stop_requested = True

    def _finish(self) -> dict[str, Any]:
        """Test-set report of the best model, plots, results.json."""
        cfg = self.config
        # every rank loads the best weights so the sharded test evaluation uses the same model
        barrier(self.dist)
        if self.dist.enabled and not params_in_sync(self.model, self.dist):
            raise RuntimeError("DDP replicas diverged: parameters differ between ranks")
        if not (self.output / "best.pt").exists():
            raise RuntimeError(f"{self.output / 'best.pt'} is missing; the run saved no epoch")
        best_state = torch.load(self.output / "best.pt", map_location="cpu", weights_only=True)
        model = self.eval_model()
        current = {k: v.clone() for k, v in model.state_dict().items()}
        if self.ema is not None:
            self.ema.load_state_dict(best_state["ema"])
        else:
            self.model.load_state_dict(best_state["model"])
        test = self._evaluate(self.bundle.test, cfg.limit_val_batches, "test")
        task = self.task
        results = run_results(cfg, test, task, best=self.best, history=self.history,
                              train_seconds=self.train_seconds, elapsed=self.elapsed, budget_spent=self.budget_spent)
        if self.dist.is_main:
            self.folder.export_best(model, self.bundle.class_names,
                                    {**self.training_record(), **task.test_scalars(test)})
            self.folder.write_results(
                results, confusion=test.confusion, class_names=self.bundle.class_names, history=self.history,
                confusion_title=task.test_title(cfg.model, cfg.dataset, "test", test),
                details=task.per_class(test, self.bundle.class_names), curves=task.curves)
        model.load_state_dict(current)
        return results


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt

